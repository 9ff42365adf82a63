"""The HTTP gateway: ``create_app()`` builds it; the lifespan opens and closes the Redis pool and the
job-event listener. Run it with ``srgan serve`` (or ``uvicorn --factory app.main:create_app``).

The gateway only checks, stores and queues: it reads image headers and checks an upload's body as cheaply as its
format allows (``model.imagecheck``), and never computes. In front of the routes: ``MetricsMiddleware``, then
``AdminGuard`` and ``ClientGuard`` (keys, before any body is read), then ``BodyGuard`` (sizes and media types).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import errors
from app.admin import AdminGuard
from app.auth import ClientGuard, ClientKeys
from app.config import Settings, get_settings
from app.guards import BodyGuard
from app.metrics import GATEWAY_PROCESSES, MetricsMiddleware, process_exiting
from app.openapi import document
from app.routes import docs, health, jobs, models, training, ui, upscale
from app.service import Gateway
from app.webhooks import WebhookSender

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gw = Gateway(settings)
        await gw.start()
        app.state.gateway = gw
        # Webhooks go out from every gateway process; the job's JSON is the one GET /v1/jobs/{id} answers.
        sender = WebhookSender(settings, gw.jobs, lambda rec: jobs.job_resource(rec, gw).model_dump_json().encode())
        await sender.start()
        log.info("gateway: queue %r on %s, storage %s", settings.queue, _redacted(settings.redis_url), settings.storage)
        GATEWAY_PROCESSES.set(1)
        try:
            yield
        finally:
            await sender.close()
            await gw.close()
            process_exiting()

    app = FastAPI(
        title="srgan-service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: from packaged files, not a CDN (app/routes/docs.py)
        redoc_url=None,
        description="Image super-resolution: POST an image, get a job, fetch the upscaled result. "
        "Every error is an RFC 9457 problem (`application/problem+json`) with a stable `code`, and keeps the "
        '`{"error": {"code", "message"}}` object of the first version. With client keys configured, `/v1/` '
        "routes need `Authorization: Bearer <client key>`; the admin routes (model versions, training runs) "
        "need `Authorization: Bearer <SRGAN_ADMIN_KEY>`.",
    )
    errors.install(app)
    docs.install(app)
    for r in (upscale.router, jobs.router, models.router, training.router, health.router, ui.router):
        app.include_router(r)
    keys = ClientKeys.from_settings(settings)
    document(app, keys)
    # Outermost last: metrics see everything; keys are checked before any body is looked at.
    app.add_middleware(BodyGuard, settings=settings)
    app.add_middleware(ClientGuard, keys=keys)
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
