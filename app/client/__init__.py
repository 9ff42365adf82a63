"""The Python client of the service: blocking (:class:`Client`) and asyncio (:class:`AsyncClient`).

It needs only httpx (``pip install srgan-service``, no torch), and returns typed records (:class:`Job`,
:class:`Catalog`, :class:`Result`)::

    from app.client import Client

    with Client("http://127.0.0.1:8000") as c:
        job = c.upscale("photo.jpg", "photo_x4.png", model="srresnet")     # submit, wait, save
        print(job.output.width, job.output.height, job.model_version)
        for r in c.upscale_iter(["a.jpg", "b.jpg", "c.jpg"], model="espcn"):  # as each job finishes
            print(r.source, len(r.image) if r.ok else r.error)

    async with AsyncClient(url) as c:                                        # the same, awaitable
        job = await c.upscale("photo.jpg", "photo_x4.png")

On a gateway with client keys, pass yours: ``Client(url, api_key=...)`` (sent as ``Authorization: Bearer``
on every route but the admin ones, which get ``admin_key``). ``c.jobs()`` walks your jobs, newest first;
``submit(..., callback_url=...)`` asks for a webhook when the job ends.

Every error answer is raised as :class:`ServiceError` (``status``, ``code``, ``message``, ``retry_after``).
A full queue (429), a passing outage (502/503/504) or a dropped connection is retried, waiting what the
answer's ``Retry-After`` says (:class:`Retry` sets how often and how long); uploads carry an Idempotency-Key,
so a retried upload never makes two jobs.

With ``admin_key`` (the gateway's SRGAN_ADMIN_KEY) the blocking client also drives the model registry and
training runs (those methods return the API's JSON as dicts)::

    with Client(url, admin_key=key) as c:
        v = c.upload_version("espcn", "runs/espcn/espcn_x4.safetensors")   # checked and gated
        c.promote("espcn", v["version"], wait=10)                            # workers switch
        run = c.start_training(stage="espcn", data=["/data/photos"], steps=5000, auto_promote=True)
"""

from app.client.aio import AsyncClient
from app.client.base import Retry, parse_retry_after
from app.client.sync import Client
from app.client.types import (
    Catalog,
    ErrorInfo,
    InputInfo,
    Job,
    Model,
    OutputInfo,
    Result,
    ServiceError,
    Timings,
    Webhook,
)

__all__ = [
    "AsyncClient",
    "Catalog",
    "Client",
    "ErrorInfo",
    "InputInfo",
    "Job",
    "Model",
    "OutputInfo",
    "Result",
    "Retry",
    "ServiceError",
    "Timings",
    "Webhook",
    "parse_retry_after",
]
