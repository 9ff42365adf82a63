"""What the client returns: typed records of the API's JSON (unknown fields are kept in ``raw``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Catalog",
    "ErrorInfo",
    "InputInfo",
    "Job",
    "Model",
    "OutputInfo",
    "Result",
    "ServiceError",
    "Timings",
    "Webhook",
]

TERMINAL = frozenset({"finished", "failed", "canceled"})


class ServiceError(Exception):
    """An error answer of the service (``{"error": {"code", "message"}}``), or a job that did not finish."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str


@dataclass(frozen=True)
class InputInfo:
    format: str
    width: int
    height: int
    bytes: int
    mode: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class OutputInfo:
    width: int
    height: int
    bytes: int
    content_type: str
    sha256: str | None = None  # of the result's bytes (its ETag)


@dataclass(frozen=True)
class Webhook:
    """How the delivery of the job's end to its ``callback_url`` goes."""

    url: str
    status: str  # pending, delivered, failed
    attempts: int = 0
    last_error: str | None = None
    delivered_at: dt.datetime | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Webhook:
        return cls(d["url"], d["status"], d.get("attempts", 0), d.get("last_error"), _time(d.get("delivered_at")))


@dataclass(frozen=True)
class Timings:
    queued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    queue_wait_s: float | None = None
    processing_s: float | None = None


@dataclass(frozen=True)
class Job:
    """A job resource (``GET /v1/jobs/{id}``)."""

    id: str
    status: str
    model: str
    scale: int
    format: str
    progress: float
    input: InputInfo
    timings: Timings
    attempts: int = 0
    output: OutputInfo | None = None
    error: ErrorInfo | None = None
    queue_position: int | None = None
    estimated_wait_s: float | None = None
    model_version: int | None = None
    model_sha256: str | None = None
    realism: float | None = None
    created_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    webhook: Webhook | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Finished, failed or canceled: it changes no more."""
        return self.status in TERMINAL

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        t = d.get("timings") or {}
        return cls(
            id=d["id"],
            status=d["status"],
            model=d["model"],
            scale=d["scale"],
            format=d["format"],
            progress=float(d.get("progress") or 0.0),
            input=InputInfo(**{k: d["input"].get(k) for k in ("format", "width", "height", "bytes", "mode", "sha256")}),
            timings=Timings(
                queued_at=_time(t.get("queued_at")),
                started_at=_time(t.get("started_at")),
                ended_at=_time(t.get("ended_at")),
                queue_wait_s=t.get("queue_wait_s"),
                processing_s=t.get("processing_s"),
            ),
            attempts=d.get("attempts", 0),
            output=OutputInfo(**{k: d["output"].get(k) for k in ("width", "height", "bytes", "content_type", "sha256")})
            if d.get("output")
            else None,
            error=ErrorInfo(d["error"]["code"], d["error"]["message"]) if d.get("error") else None,
            queue_position=d.get("queue_position"),
            estimated_wait_s=d.get("estimated_wait_s"),
            model_version=d.get("model_version"),
            model_sha256=d.get("model_sha256"),
            realism=d.get("realism"),
            created_at=_time(d.get("created_at")),
            expires_at=_time(d.get("expires_at")),
            webhook=Webhook.from_dict(d["webhook"]) if d.get("webhook") else None,
            raw=d,
        )

    def failure(self) -> ServiceError:
        """This unfinished job as the error to raise: its own error, else ``job_canceled`` (as the API says)."""
        err = self.error or ErrorInfo(f"job_{self.status}", f"the job was {self.status}")
        return ServiceError(409, err.code, err.message)


@dataclass(frozen=True)
class Model:
    """One (model, scale) of ``GET /v1/models``."""

    name: str
    scale: int
    arch: str
    description: str
    has_weights: bool
    version: int | None = None
    sha256: str | None = None
    versions: tuple[int, ...] = ()
    loaded: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Model:
        return cls(
            name=d["name"],
            scale=d["scale"],
            arch=d["arch"],
            description=d.get("description", ""),
            has_weights=d.get("has_weights", False),
            version=d.get("version"),
            sha256=d.get("sha256"),
            versions=tuple(d.get("versions") or ()),
            loaded=d.get("loaded", False),
            metrics=d.get("metrics") or {},
        )


@dataclass(frozen=True)
class Catalog:
    """``GET /v1/models``: every model and scale the service knows, and what a request without them gets."""

    default: str
    default_scale: int | None
    models: tuple[Model, ...]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Catalog:
        return cls(d["default"], d.get("default_scale"), tuple(Model.from_dict(m) for m in d["models"]), d)

    def get(self, name: str, scale: int) -> Model | None:
        return next((m for m in self.models if m.name == name and m.scale == scale), None)


@dataclass(frozen=True)
class Result:
    """One image of :meth:`Client.upscale_iter`: its finished job and the result's bytes, or the error."""

    index: int
    source: str | Path | bytes
    job: Job | None
    image: bytes | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
