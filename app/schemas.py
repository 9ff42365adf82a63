"""The gateway's response bodies (they are what ``/docs`` shows)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "started", "finished", "failed", "canceled"]


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: e.g. `not_an_image`, `queue_full`, `worker_died`")
    message: str = Field(description="what went wrong, for a human")


class ErrorResponse(BaseModel):
    error: ErrorBody


class InputInfo(BaseModel):
    format: str
    width: int
    height: int
    mode: str | None = None
    bytes: int
    sha256: str | None = None


class OutputInfo(BaseModel):
    width: int
    height: int
    bytes: int
    content_type: str


class JobLinks(BaseModel):
    self: str
    result: str


class JobTimings(BaseModel):
    queued_at: dt.datetime | None = Field(None, description="accepted by the gateway")
    started_at: dt.datetime | None = Field(None, description="taken by a worker (the latest attempt)")
    ended_at: dt.datetime | None = Field(None, description="finished, failed or canceled")
    queue_wait_s: float | None = None
    processing_s: float | None = None


class Job(BaseModel):
    id: str = Field(description="unguessable job id (128 random bits)")
    status: JobStatus
    model: str
    scale: int
    format: str = Field(description="output format")
    model_version: str | None = Field(None, description="sha256 of the weights that computed the result "
                                                        "(`builtin` for interpolation), once finished")
    created_at: dt.datetime | None
    timings: JobTimings
    progress: float = Field(description="0..1: tiles computed / tiles planned")
    attempts: int = Field(description="times a worker started this job (more than 1 after a worker died)")
    queue_position: int | None = Field(None, description="jobs ahead of this one, while queued")
    estimated_wait_s: float | None = Field(None, description="rough seconds until it starts, while queued")
    input: InputInfo
    output: OutputInfo | None = None
    error: ErrorBody | None = None
    expires_at: dt.datetime | None = Field(None, description="when the upload (while queued or started) or the "
                                                             "result and this record (once ended) are deleted")
    links: JobLinks


class ModelInfo(BaseModel):
    name: str
    scale: int
    arch: str
    description: str
    has_weights: bool
    version: str | None = Field(None, description="sha256 of the weights, `builtin` for interpolation")
    loaded: bool = Field(description="a live worker has it loaded")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]


class WorkerModel(BaseModel):
    name: str
    scale: int
    version: str
    device: str
    precision: str


class WorkerInfo(BaseModel):
    name: str
    models: list[WorkerModel]
    busy: int = 0


class Ready(BaseModel):
    status: Literal["ready"]
    queue_depth: int
    workers: list[WorkerInfo]
