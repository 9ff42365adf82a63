"""Route dependencies as ``Annotated`` aliases (as in fastapi/full-stack-fastapi-template ``api/deps.py``), and
the same as plain calls for the routes every job goes through (:func:`gateway_of`, :func:`client_of`): FastAPI
solves each dependency with a pass of its own over the request (path, query, headers, cookies), which cost
those routes more CPU than their own work did (the overhead benchmark)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from app.config import Settings
from app.service import Gateway


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def client_of(request: Request) -> str | None:
    """The caller's client id (12 hex digits of its key's sha256, set by :class:`app.auth.ClientGuard`), or
    None in open mode."""
    return getattr(request.state, "client", None)


# async (though they do no I/O): FastAPI runs a plain ``def`` dependency in the thread pool, a hand-off per
# dependency per request.
async def get_gateway(request: Request) -> Gateway:
    return gateway_of(request)


async def get_settings(request: Request) -> Settings:
    return request.app.state.gateway.settings


async def get_client(request: Request) -> str | None:
    return client_of(request)


def no_empty_form_fields(*names: str):
    """A route dependency refusing these multipart fields when sent empty: FastAPI takes an empty form field
    as absent (what a browser sends for an untouched input), so ``model=""`` would silently mean the default."""

    async def check(request: Request) -> None:
        form = await request.form()  # the form FastAPI parsed for the route (Starlette keeps it)
        empty = [n for n in names if "" in form.getlist(n)]
        if empty:
            raise empty_fields_refused(empty)

    return Depends(check)


def empty_fields_refused(names: list[str]) -> RequestValidationError:
    """The 422 for multipart fields sent empty (:func:`no_empty_form_fields`, and the upload route's own form)."""
    return RequestValidationError(
        [{"type": "string_too_short", "loc": ("body", n), "msg": "empty: leave it out for the default"} for n in names]
    )


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[str | None, Depends(get_client)]
