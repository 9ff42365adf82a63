"""The HTTP gateway: ``create_app()`` builds it; the lifespan opens and closes the Redis pool and the
job-event listener. Run it with ``srgan serve`` (or ``uvicorn --factory app.main:create_app``).

The gateway only checks, stores and queues: it reads image headers, never decodes pixels, and never computes.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.admin import AdminGuard
from app.config import Settings, get_settings
from app.metrics import MetricsMiddleware
from app.routes import docs, health, jobs, models, training, ui, upscale
from app.service import Gateway

__all__ = ["create_app"]

log = logging.getLogger(__name__)

UPLOAD_PATH = "/v1/upscale"


class UploadGuard:
    """Refuses an upload before FastAPI parses it: not multipart (415), or larger than the limit (413, from
    Content-Length when given, else by counting the body as it streams in)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != UPLOAD_PATH:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if not ctype.startswith("multipart/form-data"):
            await self._refuse(
                scope,
                receive,
                send,
                415,
                "unsupported_media_type",
                f"send the image as multipart/form-data (field `file`), not {ctype or 'no type'}",
            )
            return
        limit = self.max_bytes + 64 * 1024  # room for the multipart framing and the form fields
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(
                scope,
                receive,
                send,
                413,
                "upload_too_large",
                f"the request is {int(length):,} bytes; uploads are limited to {self.max_bytes:,}",
            )
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise errors.ApiError(
                        413, "upload_too_large", f"the upload is larger than {self.max_bytes:,} bytes"
                    )
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, code: str, message: str) -> None:
        from app.metrics import JOBS_REJECTED

        JOBS_REJECTED.labels(code).inc()
        await errors.error_response(status, code, message, {"Connection": "close"})(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gw = Gateway(settings)
        await gw.start()
        app.state.gateway = gw
        log.info("gateway: queue %r on %s, storage %s", settings.queue, _redacted(settings.redis_url), settings.storage)
        try:
            yield
        finally:
            await gw.close()

    app = FastAPI(
        title="srgan-service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: from packaged files, not a CDN (app/routes/docs.py)
        redoc_url=None,
        description="Image super-resolution: POST an image, get a job, fetch the upscaled result. "
        'Every error is `{"error": {"code", "message"}}`. The admin routes (model '
        "versions, training runs) need `Authorization: Bearer <SRGAN_ADMIN_KEY>`.",
    )
    errors.install(app)
    docs.install(app)
    for r in (upscale.router, jobs.router, models.router, training.router, health.router, ui.router):
        app.include_router(r)
    app.add_middleware(UploadGuard, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AdminGuard, settings=settings)
    app.add_middleware(MetricsMiddleware)
    return app


def _redacted(url: str) -> str:
    """The Redis URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
