"""The blocking client (:class:`Client`); :mod:`app.client.aio` is the same over asyncio."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx

from app.client.base import NO_RETRY, Keys, Retry, base_url, check, upload
from app.client.types import Catalog, Job, Result, ServiceError

log = logging.getLogger(__name__)

Image = str | Path | bytes
ProgressFn = Callable[[Job], None]


class Client:
    """A blocking client of the service. Every error answer is raised as :class:`ServiceError`; requests
    that meet a full queue or a passing outage are retried as ``retry`` says (honouring ``Retry-After``)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        admin_key: str | None = None,
        retry: Retry | None = None,
        api_key: str | None = None,
    ):
        self.retry = retry or Retry()
        self.http = httpx.Client(
            base_url=base_url(url), timeout=timeout, transport=transport, auth=Keys(url, api_key, admin_key)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(
        self, method: str, path: str, *, wait: float = 0.0, retry: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """One API call, retried as ``self.retry`` says (``retry=False`` for calls that are not idempotent)."""
        policy = self.retry if retry else NO_RETRY
        if wait:
            kwargs["params"] = {**kwargs.get("params", {}), "wait": wait}
            read = self.http.timeout.read
            kwargs["timeout"] = None if read is None else read + wait  # the server holds the answer that long
        attempt = 0
        while True:
            try:
                r = self.http.request(method, path, **kwargs)
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
            time.sleep(delay)
            attempt += 1

    # -- jobs ---------------------------------------------------------------------------------------------
    def submit(
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
        """Upload an image (a path or its bytes); returns the queued job. ``realism`` (0..1) blends srresnet
        (0) and srgan (1)."""
        opts = {"model": model, "scale": scale, "format": format, "quality": quality, "callback_url": callback_url,
                "realism": realism}  # fmt: skip
        return Job.from_dict(
            self._request("POST", "/v1/upscale", **upload(image, filename, idempotency_key, opts)).json()
        )

    def job(self, job_id: str, wait: float = 0.0) -> Job:
        """The job now, or once it ends if that is within ``wait`` seconds (long-poll)."""
        return Job.from_dict(self._request("GET", f"/v1/jobs/{job_id}", wait=wait).json())

    def wait(
        self,
        job: str | Job,
        timeout: float | None = None,
        on_progress: ProgressFn | None = None,
        poll: float = 0.5,
        stop: threading.Event | None = None,
    ) -> Job:
        """Until the job ends (or ``timeout`` s): long-polls of ``poll`` s, each reading passed to
        ``on_progress`` (its ``progress`` moves with the tiles computed)."""
        job_id = job if isinstance(job, str) else job.id
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            current = self.job(job_id, wait=left)
            if on_progress is not None:
                on_progress(current)
            if current.done or (deadline is not None and time.monotonic() >= deadline) or (stop and stop.is_set()):
                return current

    def result(self, job: str | Job, wait: float = 0.0) -> bytes:
        """The result's bytes (waiting up to ``wait`` s for the job to end)."""
        job_id = job if isinstance(job, str) else job.id
        return self._request("GET", f"/v1/jobs/{job_id}/result", wait=wait).content

    def save_result(self, job: str | Job, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the result to ``path``; an existing file is kept (FileExistsError) unless ``overwrite``."""
        from model.targets import write_new

        path = Path(path)
        write_new(path, self.result(job), overwrite=overwrite)
        return path

    def cancel(self, job: str | Job) -> Job:
        job_id = job if isinstance(job, str) else job.id
        return Job.from_dict(self._request("DELETE", f"/v1/jobs/{job_id}").json())

    def jobs(self, page_size: int = 50) -> Iterator[Job]:
        """This client's jobs (every job, on a gateway without keys), newest first, page after page."""
        url: str | None = f"/v1/jobs?limit={page_size}"
        while url:
            page = self._request("GET", url).json()
            yield from (Job.from_dict(j) for j in page["jobs"])
            url = page.get("next")

    def upscale(
        self,
        image: Image,
        out: str | Path | None = None,
        *,
        overwrite: bool = False,
        on_progress: ProgressFn | None = None,
        **options: Any,
    ) -> Job:
        """Submit, wait, and save the result to ``out`` (when given). Returns the finished job; a job that
        fails is raised as :class:`ServiceError`."""
        job = self.wait(self.submit(image, **options), on_progress=on_progress)
        if not job.finished:
            raise job.failure()
        if out is not None:
            self.save_result(job, out, overwrite=overwrite)
        return job

    def upscale_iter(
        self,
        images: Iterable[Image],
        *,
        max_in_flight: int = 4,
        on_progress: Callable[[int, Job], None] | None = None,
        poll: float = 0.5,
        **options: Any,
    ) -> Iterator[Result]:
        """Upscale many images, ``max_in_flight`` jobs at a time; yields each :class:`Result` (with the
        image's bytes, or its error: one bad image does not stop the others) as its job finishes.
        ``on_progress(index, job)`` sees every reading (called from the client's threads). Leaving the loop
        early cancels the jobs not done."""
        images = list(images)
        stop = threading.Event()

        def one(i: int) -> Result:
            job = None
            try:
                job = self.submit(images[i], **options)
                seen = None if on_progress is None else lambda j: on_progress(i, j)
                job = self.wait(job, on_progress=seen, poll=poll, stop=stop)
                if not job.done:  # stopped: the caller left
                    self._cancel_quietly(job)
                    return Result(i, images[i], job, error=ServiceError(499, "abandoned", "the caller stopped"))
                if not job.finished:
                    raise job.failure()
                return Result(i, images[i], job, self.result(job))
            except (ServiceError, httpx.HTTPError, OSError) as e:
                return Result(i, images[i], job, error=e)

        with ThreadPoolExecutor(max(1, max_in_flight), thread_name_prefix="srgan-client") as pool:
            todo = iter(range(len(images)))
            pending: set[Future[Result]] = {pool.submit(one, i) for i in itertools.islice(todo, max(1, max_in_flight))}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.add(pool.submit(one, nxt))
                        yield f.result()
            finally:
                stop.set()
                for f in pending:
                    f.cancel()

    def _cancel_quietly(self, job: Job) -> None:
        try:
            self.http.delete(f"/v1/jobs/{job.id}")
        except httpx.HTTPError:
            pass

    def models(self) -> Catalog:
        return Catalog.from_dict(self._request("GET", "/v1/models").json())

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    # -- admin: model registry and training runs (need admin_key; they return the API's JSON) --------------
    def versions(self, name: str, scale: int | None = None) -> dict[str, Any]:
        """Every version of ``name`` (``espcn`` or ``espcn_x2``), the active one and the activation history."""
        return self._request("GET", f"/v1/models/{name}/versions", params={"scale": scale} if scale else {}).json()

    def upload_version(
        self,
        name: str,
        weights: str | Path,
        card: str | Path | None = None,
        *,
        force: bool = False,
        promote: bool = False,
        by: str | None = None,
        notes: str = "",
    ) -> dict[str, Any]:
        """Upload weights and their card (default: the .json beside them) as a new version; returns it."""
        weights = Path(weights)
        card = Path(card) if card else weights.with_suffix(".json")
        fields = {"force": str(force).lower(), "promote": str(promote).lower(), "notes": notes}
        if by:
            fields["by"] = by
        with open(weights, "rb") as w, open(card, "rb") as c:
            files = {
                "weights": (weights.name, w, "application/octet-stream"),
                "card": (card.name, c, "application/json"),
            }
            return self._request("POST", f"/v1/models/{name}/versions", data=fields, files=files, retry=False).json()

    def promote(
        self, name: str, version: int, *, by: str | None = None, wait: float = 0.0, scale: int | None = None
    ) -> dict[str, Any]:
        """Make ``version`` active; with ``wait``, answer once the workers have switched (see ``rollout``)."""
        params = {"scale": scale} if scale else {}
        body = {"version": version, "by": by}
        return self._request("POST", f"/v1/models/{name}/promote", json=body, params=params, wait=wait).json()

    def rollback(
        self, name: str, *, by: str | None = None, wait: float = 0.0, scale: int | None = None
    ) -> dict[str, Any]:
        params = {"scale": scale} if scale else {}
        return self._request(
            "POST", f"/v1/models/{name}/rollback", json={"by": by}, params=params, wait=wait, retry=False
        ).json()

    def start_training(self, **request: Any) -> dict[str, Any]:
        """Queue a training run (fields of ``POST /v1/training-runs``); returns the run."""
        return self._request("POST", "/v1/training-runs", json=request, retry=False).json()

    def training_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/training-runs/{run_id}").json()

    def training_runs(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/training-runs").json()["runs"]

    def training_samples(self, run_id: str) -> bytes:
        return self._request("GET", f"/v1/training-runs/{run_id}/samples").content

    def cancel_training(self, run_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/training-runs/{run_id}").json()
