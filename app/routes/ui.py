"""``GET /``: a one-page web client (upload, progress, before/after, download) for people without curl."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"


@lru_cache(maxsize=1)
def _page() -> str:
    return PAGE.read_text()


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    return HTMLResponse(_page())
