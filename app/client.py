"""A small Python client for the service (``srgan client upscale FILE --url ...`` in ``app/commands.py`` uses it).

    from app.client import Client

    with Client("http://127.0.0.1:8000") as c:
        job = c.submit("photo.jpg", model="srresnet", format="webp")
        job = c.wait(job["id"], on_progress=print)
        c.save_result(job["id"], "photo_x4.webp")

or in one call: ``Client(url).upscale("photo.jpg", "photo_x4.png")``. Every error answer of the service is
raised as :class:`ServiceError` with its ``status``, ``code`` and ``message``.

With ``admin_key`` (the gateway's SRGAN_ADMIN_KEY) it also drives the model registry and training runs::

    with Client(url, admin_key=key) as c:
        v = c.upload_version("espcn", "runs/espcn/espcn_x4.safetensors")   # checked and gated
        c.promote("espcn", v["version"], wait=10)                            # workers switch
        c.rollback("espcn")
        run = c.start_training(stage="espcn", data=["/data/photos"], steps=5000, auto_promote=True)
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
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        admin_key: str | None = None,
    ):
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else None
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport, headers=headers)

    def __enter__(self) -> Client:
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

    def submit(
        self,
        image: str | Path | bytes,
        *,
        model: str | None = None,
        scale: int | None = None,
        format: str | None = None,
        quality: int | None = None,
        idempotency_key: str | None = None,
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Upload an image; returns the job resource (status ``queued``)."""
        if isinstance(image, (str, Path)):
            filename = filename or Path(image).name
            image = Path(image).read_bytes()
        fields = {
            k: str(v)
            for k, v in {"model": model, "scale": scale, "format": format, "quality": quality}.items()
            if v is not None
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self.http.post("/v1/upscale", files={"file": (filename or "image", image)}, data=fields, headers=headers)
        return self._check(r).json()

    def job(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        return self._check(
            self.http.get(f"/v1/jobs/{job_id}", params=params, timeout=self.http.timeout.read + wait)
        ).json()

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.5,
    ) -> dict[str, Any]:
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

    # -- admin: model registry and training runs (need admin_key) ---------------------------------------------
    def versions(self, name: str, scale: int | None = None) -> dict[str, Any]:
        """Every version of ``name`` (``espcn`` or ``espcn_x2``), the active one and the activation history."""
        params = {"scale": scale} if scale else {}
        return self._check(self.http.get(f"/v1/models/{name}/versions", params=params)).json()

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
            r = self.http.post(
                f"/v1/models/{name}/versions",
                data=fields,
                files={
                    "weights": (weights.name, w, "application/octet-stream"),
                    "card": (card.name, c, "application/json"),
                },
            )
        return self._check(r).json()

    def promote(
        self, name: str, version: int, *, by: str | None = None, wait: float = 0.0, scale: int | None = None
    ) -> dict[str, Any]:
        """Make ``version`` active; with ``wait``, answer once the workers have switched (see ``rollout``)."""
        params = {k: v for k, v in {"wait": wait, "scale": scale}.items() if v}
        r = self.http.post(
            f"/v1/models/{name}/promote",
            json={"version": version, "by": by},
            params=params,
            timeout=self.http.timeout.read + wait,
        )
        return self._check(r).json()

    def rollback(
        self, name: str, *, by: str | None = None, wait: float = 0.0, scale: int | None = None
    ) -> dict[str, Any]:
        params = {k: v for k, v in {"wait": wait, "scale": scale}.items() if v}
        r = self.http.post(
            f"/v1/models/{name}/rollback", json={"by": by}, params=params, timeout=self.http.timeout.read + wait
        )
        return self._check(r).json()

    def start_training(self, **request: Any) -> dict[str, Any]:
        """Queue a training run (fields of ``POST /v1/training-runs``); returns the run."""
        return self._check(self.http.post("/v1/training-runs", json=request)).json()

    def training_run(self, run_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/training-runs/{run_id}")).json()

    def training_runs(self) -> list[dict[str, Any]]:
        return self._check(self.http.get("/v1/training-runs")).json()["runs"]

    def training_samples(self, run_id: str) -> bytes:
        return self._check(self.http.get(f"/v1/training-runs/{run_id}/samples")).content

    def cancel_training(self, run_id: str) -> dict[str, Any]:
        return self._check(self.http.delete(f"/v1/training-runs/{run_id}")).json()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def upscale(
        self,
        image: str | Path,
        out: str | Path,
        *,
        retries_when_full: int = 5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        **options,
    ) -> dict[str, Any]:
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
