"""The asyncio client (:class:`AsyncClient`): the job methods of :class:`app.client.Client`, awaitable.

async with AsyncClient(url) as c:
    async for r in c.upscale_iter(paths, model="espcn"):
        print(r.source, r.job.output if r.ok else r.error)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from app.client.base import NO_RETRY, Keys, Retry, base_url, check, upload
from app.client.types import Catalog, Job, Result, ServiceError

log = logging.getLogger(__name__)

Image = str | Path | bytes
ProgressFn = Callable[[Job], None]


class AsyncClient:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
        admin_key: str | None = None,
        retry: Retry | None = None,
        api_key: str | None = None,
    ):
        self.retry = retry or Retry()
        self.http = httpx.AsyncClient(
            base_url=base_url(url), timeout=timeout, transport=transport, auth=Keys(url, api_key, admin_key)
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(
        self, method: str, path: str, *, wait: float = 0.0, retry: bool = True, **kwargs: Any
    ) -> httpx.Response:
        policy = self.retry if retry else NO_RETRY
        if wait:
            kwargs["params"] = {**kwargs.get("params", {}), "wait": wait}
            read = self.http.timeout.read
            kwargs["timeout"] = None if read is None else read + wait  # the server holds the answer that long
        attempt = 0
        while True:
            try:
                r = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                delay = policy.delay(attempt, None)
                if delay is None:
                    raise
                log.info("%s %s: %s; retrying in %.1f s", method, path, e, delay)
            else:
                delay = policy.delay(attempt, r) if r.status_code >= 400 else None
                if delay is None:
                    return check(r)
                log.info("%s %s: %d; retrying in %.1f s", method, path, r.status_code, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def submit(
        self,
        image: Image,
        *,
        model: str | None = None,
        scale: int | None = None,
        format: str | None = None,
        quality: int | None = None,
        idempotency_key: str | None = None,
        filename: str | None = None,
        callback_url: str | None = None,
        realism: float | None = None,
    ) -> Job:
        opts = {"model": model, "scale": scale, "format": format, "quality": quality, "callback_url": callback_url,
                "realism": realism}  # fmt: skip
        if isinstance(image, (str, Path)):  # read off the event loop
            filename, image = filename or Path(image).name, await asyncio.to_thread(Path(image).read_bytes)
        r = await self._request("POST", "/v1/upscale", **upload(image, filename, idempotency_key, opts))
        return Job.from_dict(r.json())

    async def job(self, job_id: str, wait: float = 0.0) -> Job:
        return Job.from_dict((await self._request("GET", f"/v1/jobs/{job_id}", wait=wait)).json())

    async def wait(
        self, job: str | Job, timeout: float | None = None, on_progress: ProgressFn | None = None, poll: float = 0.5
    ) -> Job:
        job_id = job if isinstance(job, str) else job.id
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = poll if deadline is None else min(poll, max(0.0, deadline - loop.time()))
            current = await self.job(job_id, wait=left)
            if on_progress is not None:
                on_progress(current)
            if current.done or (deadline is not None and loop.time() >= deadline):
                return current

    async def result(self, job: str | Job, wait: float = 0.0) -> bytes:
        job_id = job if isinstance(job, str) else job.id
        return (await self._request("GET", f"/v1/jobs/{job_id}/result", wait=wait)).content

    async def save_result(self, job: str | Job, path: str | Path, *, overwrite: bool = False) -> Path:
        from model.targets import write_new

        path = Path(path)
        data = await self.result(job)
        await asyncio.to_thread(write_new, path, data, overwrite)
        return path

    async def cancel(self, job: str | Job) -> Job:
        job_id = job if isinstance(job, str) else job.id
        return Job.from_dict((await self._request("DELETE", f"/v1/jobs/{job_id}")).json())

    async def jobs(self, page_size: int = 50) -> AsyncIterator[Job]:
        """This client's jobs (every job, on a gateway without keys), newest first, page after page."""
        url: str | None = f"/v1/jobs?limit={page_size}"
        while url:
            page = (await self._request("GET", url)).json()
            for j in page["jobs"]:
                yield Job.from_dict(j)
            url = page.get("next")

    async def upscale(
        self,
        image: Image,
        out: str | Path | None = None,
        *,
        overwrite: bool = False,
        on_progress: ProgressFn | None = None,
        **options: Any,
    ) -> Job:
        job = await self.wait(await self.submit(image, **options), on_progress=on_progress)
        if not job.finished:
            raise job.failure()
        if out is not None:
            await self.save_result(job, out, overwrite=overwrite)
        return job

    async def upscale_iter(
        self,
        images: Iterable[Image],
        *,
        max_in_flight: int = 4,
        on_progress: Callable[[int, Job], None] | None = None,
        poll: float = 0.5,
        **options: Any,
    ) -> AsyncIterator[Result]:
        """As :meth:`app.client.Client.upscale_iter`: results in the order their jobs finish."""
        images = list(images)

        async def one(i: int) -> Result:
            job = None
            try:
                job = await self.submit(images[i], **options)
                seen = None if on_progress is None else lambda j: on_progress(i, j)
                job = await self.wait(job, on_progress=seen, poll=poll)
                if not job.finished:
                    raise job.failure()
                return Result(i, images[i], job, await self.result(job))
            except (ServiceError, httpx.HTTPError, OSError) as e:
                return Result(i, images[i], job, error=e)
            except asyncio.CancelledError:
                if job is not None and not job.done:
                    await asyncio.shield(self._cancel_quietly(job))
                raise

        todo = iter(range(len(images)))
        pending = {asyncio.ensure_future(one(i)) for i in itertools.islice(todo, max(1, max_in_flight))}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.add(asyncio.ensure_future(one(nxt)))
                    yield f.result()
        finally:
            for f in pending:
                f.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _cancel_quietly(self, job: Job) -> None:
        try:
            await self.http.delete(f"/v1/jobs/{job.id}")
        except httpx.HTTPError:
            pass

    async def models(self) -> Catalog:
        return Catalog.from_dict((await self._request("GET", "/v1/models")).json())

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
