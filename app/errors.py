"""One error shape for every 4xx and 5xx: ``{"error": {"code": "...", "message": "..."}}``.

Routes raise :class:`ApiError`; FastAPI's validation errors, Starlette's 404/405 for unknown routes and any
unexpected exception are rewritten into the same shape by the handlers :func:`install` registers.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorResponse

__all__ = ["ApiError", "install", "error_response", "responses", "IMAGE_ERROR_STATUS"]

log = logging.getLogger(__name__)

# Image refusals (model.imageio error codes) -> HTTP status.
IMAGE_ERROR_STATUS = {
    "not_an_image": 415,
    "unsupported_image": 415,
    "corrupt_image": 422,
    "empty_image": 422,
    "too_many_pixels": 413,
    "invalid_image": 422,
}

_GENERIC_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status`` (and optional headers)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _GENERIC_CODES.get(exc.status_code, "error")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis errors, told apart: an outage, this gateway out of connections, or Redis answering with an error."""
    from worker.retry import REDIS_DOWN

    text = str(exc)
    if isinstance(exc, redis.ConnectionError) and ("No connection available" in text or "Too many connections" in text):
        log.warning("gateway busy on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "gateway_busy", "this gateway has no free Redis connection; retry shortly",
                              {"Retry-After": "1"})  # fmt: skip
    if isinstance(exc, REDIS_DOWN):
        log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "redis_unavailable", "the queue (Redis) does not answer; retry shortly",
                              {"Retry-After": "2"})  # fmt: skip
    log.error("Redis error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "redis_error", f"the queue (Redis) answered with an error: {text}", {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the gateway's log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(redis.RedisError, _redis_down)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int, dict]:
    """OpenAPI ``responses=`` entries documenting the error shape for these statuses."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(s, "error")} for s in statuses}


_DESCRIPTIONS = {
    401: "admin route: the `Authorization: Bearer` admin key is missing or wrong",
    403: "admin route: the admin API is disabled (no SRGAN_ADMIN_KEY on the gateway)",
    404: "unknown or expired job (or model version, training run)",
    409: "conflict: not ready, not cancelable, or an idempotency key reused with other bytes",
    410: "the result has expired",
    413: "upload or image too large",
    415: "not an image, or not a multipart upload",
    422: "invalid field, unknown model, corrupt image or too many output pixels",
    429: "queue full: retry after the Retry-After header's seconds",
    503: "not ready: Redis or workers unavailable",
}
