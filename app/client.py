"""A small Python client for the service (``srgan client upscale FILE --url ...`` in ``app/commands.py`` uses it).

    from app.client import Client

    with Client("http://127.0.0.1:8000") as c:
        job = c.submit("photo.jpg", model="srresnet", format="webp")
        job = c.wait(job["id"], on_progress=print)
        c.save_result(job["id"], "photo_x4.webp")

or in one call: ``Client(url).upscale("photo.jpg", "photo_x4.png")``. Every error answer of the service is
raised as :class:`ServiceError` with its ``status``, ``code`` and ``message``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Client", "ServiceError"]

TERMINAL = ("finished", "failed", "canceled")


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None):
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _check(r: httpx.Response) -> httpx.Response:
        if r.status_code < 400:
            return r
        try:
            err = r.json()["error"]
            code, message = err["code"], err["message"]
        except Exception:
            code, message = "http_error", r.text[:200]
        ra = r.headers.get("Retry-After")
        raise ServiceError(r.status_code, code, message, float(ra) if ra and ra.isdigit() else None)

    def submit(self, image: str | Path | bytes, *, model: str | None = None, scale: int | None = None,
               format: str | None = None, quality: int | None = None, idempotency_key: str | None = None,
               filename: str | None = None) -> dict[str, Any]:
        """Upload an image; returns the job resource (status ``queued``)."""
        if isinstance(image, (str, Path)):
            filename = filename or Path(image).name
            image = Path(image).read_bytes()
        fields = {k: str(v) for k, v in {"model": model, "scale": scale, "format": format,
                                         "quality": quality}.items() if v is not None}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self.http.post("/v1/upscale", files={"file": (filename or "image", image)}, data=fields,
                           headers=headers)
        return self._check(r).json()

    def job(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        return self._check(self.http.get(f"/v1/jobs/{job_id}", params=params,
                                         timeout=self.http.timeout.read + wait)).json()

    def wait(self, job_id: str, timeout: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None, poll: float = 0.5) -> dict[str, Any]:
        """Long-poll until the job ends (or ``timeout`` seconds); ``on_progress`` sees every reading."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            job = self.job(job_id, wait=left)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job

    def result(self, job_id: str, wait: float = 0.0) -> bytes:
        """The result's bytes (waits up to ``wait`` seconds for the job to end)."""
        params = {"wait": wait} if wait else {}
        r = self.http.get(f"/v1/jobs/{job_id}/result", params=params, timeout=self.http.timeout.read + wait)
        return self._check(r).content

    def save_result(self, job_id: str, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.result(job_id))
        return path

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.delete(f"/v1/jobs/{job_id}")).json()

    def models(self) -> dict[str, Any]:
        return self._check(self.http.get("/v1/models")).json()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def upscale(self, image: str | Path, out: str | Path, *, retries_when_full: int = 5,
                on_progress: Callable[[dict[str, Any]], None] | None = None, **options) -> dict[str, Any]:
        """Submit (retrying politely while the queue is full), wait, save. Returns the finished job."""
        key = options.pop("idempotency_key", None) or uuid.uuid4().hex  # a retried POST never makes two jobs
        for attempt in range(retries_when_full + 1):
            try:
                job = self.submit(image, idempotency_key=key, **options)
                break
            except ServiceError as e:
                if e.status not in (429, 503) or attempt == retries_when_full:
                    raise
                time.sleep(e.retry_after or 1.0)
        job = self.wait(job["id"], on_progress=on_progress)
        if job["status"] != "finished":
            err = job.get("error") or {"code": job["status"], "message": f"the job was {job['status']}"}
            raise ServiceError(409, err["code"], err["message"])
        self.save_result(job["id"], out)
        return job
