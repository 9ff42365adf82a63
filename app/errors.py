"""One error shape for every 4xx and 5xx: an RFC 9457 problem (``application/problem+json``) with a stable
``code``, which also keeps the ``{"error": {"code", "message"}}`` object of the first API version::

    {"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
     "detail": "the JPEG is truncated or corrupt: ...", "code": "corrupt_image",
     "error": {"code": "corrupt_image", "message": "the JPEG is truncated or corrupt: ..."}}

Routes raise :class:`ApiError`; FastAPI's validation errors (422, with ``errors`` naming each field), a body it
cannot parse (400), Starlette's 404/405 for unknown routes and methods (405 with an ``Allow`` header that lists
every method of the path; ``OPTIONS`` answers 204 with it) and any unexpected exception are rewritten into the
same shape by the handlers :func:`install` registers. :func:`document` makes ``/openapi.json`` say exactly that.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

__all__ = [
    "ApiError",
    "install",
    "error_response",
    "responses",
    "IMAGE_ERROR_STATUS",
    "PROBLEM_MEDIA_TYPE",
]

log = logging.getLogger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"

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
    400: "malformed_body",
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
    """An error answered as a problem with ``status``, ``code``, ``message`` (and optional headers)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": message,
        "code": code,
        "error": {"code": code, "message": message},
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, dict(exc.headers or {}))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's). Asks
    each route whether it fully matches the path with each method (only on a 405, so the cost does not matter)."""
    methods = {"OPTIONS"}
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.add(method)
    return sorted(methods)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = _GENERIC_CODES.get(exc.status_code, "error")
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=headers)
        message = f"{request.method} is not allowed on {request.url.path}; it allows {headers['Allow']}"
    elif exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 400:  # FastAPI's or Starlette's: the body could not be parsed
        detail = "" if exc.detail == "There was an error parsing the body" else f": {exc.detail}"
        message = f"the request body could not be parsed (malformed multipart, or JSON that is not UTF-8){detail}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, headers or None)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header"))
        fields.append({"field": loc, "message": str(e.get("msg"))})
    message = "; ".join(f"{f['field']}: {f['message']}" if f["field"] else f["message"] for f in fields)
    return error_response(422, "invalid_request", message or "invalid request", errors=fields)


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
    # Starlette types a handler as taking any Exception; each of these is registered for its own class.
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(redis.RedisError, _redis_down)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these error statuses (:func:`app.openapi.document` gives them the
    problem schema and media type)."""
    return {s: {"description": DESCRIPTIONS.get(s, HTTPStatus(s).phrase)} for s in statuses}


DESCRIPTIONS = {
    400: "the body could not be parsed (malformed multipart, or JSON that is not UTF-8)",
    401: "a key is needed: `Authorization: Bearer <key>` (a client key, or on admin routes SRGAN_ADMIN_KEY)",
    403: "admin route: the admin API is disabled (no SRGAN_ADMIN_KEY on the gateway)",
    404: "unknown or expired job (or model version, training run)",
    409: "conflict: not ready, not cancelable, or an idempotency key reused with other bytes",
    410: "the result has expired",
    413: "request body, upload or image too large",
    415: "not an image, not a supported image, or the wrong body media type",
    416: "the range starts past the end of the result (`Content-Range: bytes */<size>`)",
    422: "invalid field (each named in `errors`), unknown model, corrupt image, too many output pixels, or a "
    "refused `callback_url`",
    429: "queue full: retry after the Retry-After header's seconds",
    500: "internal error (see the gateway's log)",
    503: "not ready, or Redis does not answer: retry after the Retry-After header's seconds",
}
