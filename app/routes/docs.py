"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files installed with the gateway, never from a CDN.

The files come from the ``fastapi-offline`` package (it ships Swagger UI 5 and ReDoc 2 builds, refreshed with
its releases); the pages are FastAPI's own, pointed at them, with ReDoc's Google Fonts off. The pages' Content
Security Policy lets them load from this server only: ReDoc's sidebar would fetch its vendor's logo from a CDN
(it hides it when that fails), and no request leaves the browser for it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS", "PREFIX", "install"]

ASSETS = Path(str(files("fastapi_offline") / "static"))
PREFIX = "/docs-assets"
# Both UIs run inline scripts and styles; ReDoc draws with data: images and searches in a blob: worker.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP
    return response


def install(app: FastAPI) -> None:
    """Serve the docs pages (create the app with ``docs_url=None, redoc_url=None``)."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
    redirect = app.swagger_ui_oauth2_redirect_url

    def assets(request: Request) -> str:
        return request.scope.get("root_path", "") + PREFIX

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root, at = request.scope.get("root_path", ""), assets(request)
        return _page(
            get_swagger_ui_html(
                openapi_url=root + app.openapi_url,
                title=f"{app.title} - API",
                oauth2_redirect_url=redirect,
                swagger_js_url=f"{at}/swagger-ui-bundle.js",
                swagger_css_url=f"{at}/swagger-ui.css",
                swagger_favicon_url=f"{at}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    if redirect:

        @app.get(redirect, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root, at = request.scope.get("root_path", ""), assets(request)
        return _page(
            get_redoc_html(
                openapi_url=root + app.openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{at}/redoc.standalone.js",
                redoc_favicon_url=f"{at}/favicon.png",
                with_google_fonts=False,
            )
        )
