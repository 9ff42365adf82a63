"""Route dependencies as ``Annotated`` aliases (as in fastapi/full-stack-fastapi-template ``api/deps.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.service import Gateway


# async (though they do no I/O): FastAPI runs a plain ``def`` dependency in the thread pool, a hand-off per
# dependency per request.
async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def get_settings(request: Request) -> Settings:
    return request.app.state.gateway.settings


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
