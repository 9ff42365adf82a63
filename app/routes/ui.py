"""``GET /``: the web page (upload with a preview, model choices, progress, before/after, download), and
``GET /static/{name}`` for its script and style. Plain files, no build step, nothing from a CDN."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from app.errors import ApiError

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parents[1] / "static"
# The page's files, by name (nothing else in the folder is served).
FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@lru_cache(maxsize=len(FILES) + 1)
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    return HTMLResponse(_read("index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in FILES:
        raise ApiError(404, "not_found", f"no file {name!r}")
    return Response(_read(name), media_type=FILES[name], headers={"Cache-Control": "no-cache"})
