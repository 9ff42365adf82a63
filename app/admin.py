"""Who may use the admin routes (model versions, training runs): the holder of ``SRGAN_ADMIN_KEY``.

Every admin route answers 403 while no key is configured (with how to enable them) and 401 with a
``WWW-Authenticate`` challenge to a missing or wrong ``Authorization: Bearer <key>``; never 404 or 2xx without
the key (``OPTIONS``, which only lists the allowed methods, is let through). :class:`AdminGuard` checks before
the request body is read (a multipart weights upload is not parsed for a stranger), and :data:`AdminDep`
checks again on each route (and documents the scheme in ``/docs``); both call :func:`check`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ApiError, error_response
from app.paths import is_admin_path

__all__ = ["check", "is_admin_path", "AdminGuard", "AdminDep", "require_admin", "ADMIN_RESPONSES"]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="srgan-admin"'}
_bearer = HTTPBearer(auto_error=False, description="SRGAN_ADMIN_KEY of the gateway", scheme_name="AdminKey")


def check(settings, authorization: str | None) -> ApiError | None:
    """None when ``authorization`` (the header's value) carries the admin key, else the error to answer."""
    key = settings.admin_key.get_secret_value() if settings.admin_key is not None else ""
    if not key:
        return ApiError(
            403,
            "admin_disabled",
            "the admin API is disabled on this gateway: set SRGAN_ADMIN_KEY "
            "(a long random string) in its environment and restart it, then send "
            "`Authorization: Bearer <key>`",
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ApiError(401, "unauthorized", "admin route: send `Authorization: Bearer <SRGAN_ADMIN_KEY>`", _CHALLENGE)
    if not hmac.compare_digest(token.strip().encode(), key.encode()):
        return ApiError(401, "unauthorized", "the admin key is wrong", _CHALLENGE)
    return None


class AdminGuard:
    """Refuses admin requests without the key before FastAPI reads their body."""

    def __init__(self, app: ASGIApp, settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS" and is_admin_path(scope["path"]):
            header = dict(scope["headers"]).get(b"authorization")
            err = check(self.settings, header.decode("latin-1") if header is not None else None)
            if err is not None:
                headers = dict(err.headers or {})
                if scope["method"] != "GET":
                    headers["Connection"] = "close"  # the unread body is not drained
                await error_response(err.status_code, err.code, err.message, headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    err = check(request.app.state.gateway.settings, request.headers.get("authorization"))
    if err is not None:
        raise err


AdminDep = Depends(require_admin)
ADMIN_RESPONSES = (401, 403)
