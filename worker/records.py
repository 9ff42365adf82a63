"""Typed records that cross process boundaries: a job as the gateway and the workers both read it, and a worker
as it advertises itself.

A job lives in rq's job hash ``rq:job:<id>`` (so rq's tools see it). rq's fields give its status and times; the
service's own fields are one JSON document in the hash field ``srgan`` (:class:`UpscaleJob` or
:class:`TrainingRun`, told apart by ``kind``) plus ``progress`` (a bare number, so a progress update writes a few
bytes and never rewrites the document). Only ``worker/jobs.py`` reads and writes them in Redis; everyone else gets
a :class:`JobRecord`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Status",
    "TERMINAL",
    "InputInfo",
    "OutputInfo",
    "JobError",
    "JobState",
    "UpscaleJob",
    "TrainingRun",
    "TrainingOutput",
    "JobRecord",
    "WebhookState",
    "ServedModel",
    "WorkerInfo",
]

Status = Literal["queued", "started", "finished", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"finished", "failed", "canceled"})


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer writer's extra fields never break an older reader


class InputInfo(_Record):
    """The upload, as its header says (read at the door, never decoded there)."""

    format: str
    width: int
    height: int
    mode: str
    bytes: int
    sha256: str


class OutputInfo(_Record):
    width: int
    height: int
    bytes: int
    content_type: str
    sha256: str | None = None  # of the result's bytes, recorded at finish (the result's strong ETag)


class JobError(_Record):
    code: str
    message: str


class JobState(_Record):
    """What every job carries through its life, whatever it computes."""

    kind: str
    owner: str | None = None  # the client that created it (a short key hash; None in open mode)
    requeued: list[str] = Field(default_factory=list)  # why it was put back on the queue, each time
    error: JobError | None = None
    expires_at: dt.datetime | None = None  # when the upload (queued) or the result (ended) is deleted


class UpscaleJob(JobState):
    kind: Literal["upscale"] = "upscale"
    model: str
    scale: int
    version_pin: int | None = None
    format: str
    quality: int
    input: InputInfo
    output: OutputInfo | None = None
    model_version: int | None = None  # what computed it: registry version (None: interpolation)
    model_sha256: str | None = None  # its weights' sha256 ("builtin" for interpolation)
    batch_started_at: dt.datetime | None = None
    callback_url: str | None = None  # POSTed the job's JSON when it ends (a webhook; checked at the door)
    realism: float | None = None  # 0..1: a blend of the active srresnet (0) and srgan (1); model is srgan

    @property
    def model_key(self) -> tuple[str, int, int | None, float | None]:
        """(model, scale, pinned version, realism): jobs with the same key run through one engine call."""
        return self.model, self.scale, self.version_pin, self.realism


class TrainingOutput(_Record):
    version: int
    sha256: str
    gate: dict[str, Any] | None = None
    promoted: bool = False
    promote_reason: str | None = None
    weights: str | None = None


class TrainingRun(JobState):
    kind: Literal["training"] = "training"
    model: str
    scale: int
    stage: str
    request: dict[str, Any]  # what was asked (validated by the gateway's TrainingRunRequest)
    step: int = 0
    total_steps: int | None = None
    losses: dict[str, float] = Field(default_factory=dict)
    lr: float | None = None
    it_s: float | None = None
    seconds: float | None = None
    val: dict[str, Any] | None = None
    val_step: int | None = None
    samples_step: int | None = None
    checkpoint_step: int | None = None
    out: str | None = None
    init: str | None = None
    output: TrainingOutput | None = None


WebhookStatus = Literal["pending", "delivered", "failed"]


class WebhookState(_Record):
    """How the delivery of a job's end to its ``callback_url`` goes (the job hash's field ``webhook``, written by
    whoever delivers it; absent until the first attempt)."""

    status: WebhookStatus = "pending"
    attempts: int = 0
    last_error: str | None = None
    last_attempt_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None


class JobRecord(_Record):
    """One reading of a job: rq's status and times, the progress, and the service's own document."""

    id: str
    queue: str
    status: Status
    created_at: dt.datetime | None = None
    enqueued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    progress: float = 0.0
    attempts: int = 0  # times a worker started it; a job whose workers die max_attempts times fails
    worker: str | None = None  # the worker that computes / computed it (None while queued)
    data: Annotated[UpscaleJob | TrainingRun, Field(discriminator="kind")]
    webhook: WebhookState | None = None  # the delivery of its end, once one was tried

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class ServedModel(_Record):
    name: str
    scale: int
    version: int | None = None
    sha256: str
    device: str
    precision: str


class WorkerInfo(_Record):
    """What a live worker advertises (``<prefix>:alive:<name>``, refreshed by its heartbeat)."""

    name: str
    pid: int
    host: str
    queue: str
    models: list[ServedModel] = Field(default_factory=list)
    seconds_per_job: float | None = None
    busy: int = 0
