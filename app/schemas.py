"""The gateway's request and response bodies (they are what ``/docs`` shows).

Request bodies are strict: a boolean is ``true`` or ``false`` (not ``0``), a number is a JSON number (not a
string; ``2.0`` is the integer 2, as JSON Schema has it), a name is never empty, and an unknown field is refused
rather than ignored.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

JobStatus = Literal["queued", "started", "finished", "failed", "canceled"]
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _form_bool(v: Any) -> Any:
    """A multipart form's boolean: the text ``true`` or ``false`` (any case), nothing else."""
    if isinstance(v, str):
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        raise ValueError("a boolean form field is `true` or `false`")
    return v


FormBool = Annotated[bool, BeforeValidator(_form_bool)]


def _json_number(v: Any) -> Any:
    if isinstance(v, (bool, str)):  # pydantic's lax mode would take true as 1 and "2" as 2
        raise ValueError("a JSON number is needed")
    return v


JsonInt = Annotated[int, BeforeValidator(_json_number)]


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: e.g. `not_an_image`, `queue_full`, `worker_died`")
    message: str = Field(description="what went wrong, for a human")


class FieldError(BaseModel):
    field: str = Field(description="the field, dotted (`overrides.lr`; empty for the body as a whole)")
    message: str


class Problem(BaseModel):
    """Every error (RFC 9457 ``application/problem+json``)."""

    type: str = Field("about:blank", description="always `about:blank`: `code` says which error this is")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong, for a human")
    code: str = Field(description="stable, machine-readable: e.g. `corrupt_image`, `queue_full`, `unauthorized`")
    error: ErrorBody = Field(description="`code` and `detail` again, as the first API version sent them")
    errors: list[FieldError] | None = Field(None, description="with `invalid_request`: each invalid field")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpscaleForm(BaseModel):
    """The fields of ``POST /v1/upscale`` beside its ``file`` (multipart text, validated as FastAPI would a
    ``Form()`` parameter: lax, so ``"4"`` is 4). The route validates them in one step (``app/routes/upscale.py``)."""

    model_config = ConfigDict(extra="ignore", title="UpscaleForm")

    model: str | None = Field(
        None,
        min_length=1,
        max_length=120,
        description="model name (its active version), or `name@version` to pin a registered version: its "
        "number, or 6+ hex digits of its sha256 (default: SRGAN_DEFAULT_MODEL; an empty name is refused)",
    )
    scale: int | None = Field(None, ge=1, le=8, description="upscaling factor (default: 4)")
    realism: float | None = Field(
        None,
        ge=0,
        le=1,
        description="0..1: blend the active `srresnet` (0, smooth, highest PSNR) and `srgan` (1, sharpest "
        "textures) weights, rounded to 0.01; the job runs as `srgan` (leave out `model` or name `srgan`)",
    )
    format: Literal["png", "webp", "jpeg"] | None = Field(None, description="output format")
    quality: int | None = Field(None, ge=1, le=100, description="WebP/JPEG quality")
    callback_url: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="when the job ends (finished, failed, canceled), POST its JSON here, signed "
        "(`Srgan-Signature`), retried with backoff; public http(s) addresses only",
    )


def upscale_form_schema() -> dict[str, Any]:
    """The multipart body's JSON schema for the OpenAPI document: the image, then :class:`UpscaleForm`."""
    schema = UpscaleForm.model_json_schema()
    schema.pop("description", None)  # the class's docstring is for us
    for field in schema["properties"].values():
        field.pop("default", None)  # left out, a field is absent (None), which the wire cannot say
    file = {"type": "string", "contentMediaType": "application/octet-stream", "title": "File",
            "description": "the image: PNG, JPEG, WebP, BMP, TIFF or GIF"}  # fmt: skip
    schema["properties"] = {"file": file, **schema["properties"]}
    schema["required"] = ["file"]
    return schema


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
    sha256: str | None = Field(None, description="sha256 of the result's bytes: its strong `ETag`")


class JobLinks(BaseModel):
    self: str
    result: str


class JobTimings(BaseModel):
    queued_at: dt.datetime | None = Field(None, description="accepted by the gateway")
    started_at: dt.datetime | None = Field(None, description="taken by a worker (the latest attempt)")
    ended_at: dt.datetime | None = Field(None, description="finished, failed or canceled")
    batch_started_at: dt.datetime | None = Field(
        None,
        description="its batch started computing, with the model "
        "version recorded in `model_version` (a version switch waits for "
        "the batch to end)",
    )
    queue_wait_s: float | None = None
    processing_s: float | None = None


class WebhookInfo(BaseModel):
    url: str = Field(description="the `callback_url` the job's JSON is POSTed to when it ends")
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: the job has not ended, or a delivery is due (again); `delivered`: the receiver "
        "answered 2xx; `failed`: given up (SRGAN_WEBHOOK_RETRY_FOR_S passed, or the URL is refused)"
    )
    attempts: int = Field(0, description="deliveries tried")
    last_error: str | None = Field(None, description="why the last attempt failed")
    last_attempt_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = Field(None, description="when the next attempt is due, while retrying")
    delivered_at: dt.datetime | None = None


class Job(BaseModel):
    id: str = Field(description="unguessable job id (128 random bits)")
    status: JobStatus
    model: str
    scale: int
    format: str = Field(description="output format")
    model_version: int | None = Field(
        None,
        description="registry version of the model that computed the result, once finished (null for interpolation)",
    )
    model_sha256: str | None = Field(
        None, description="sha256 of the weights that computed the result (`builtin` for interpolation), once finished"
    )
    realism: float | None = Field(
        None, description="the realism asked for: a blend of the active srresnet (0) and srgan (1); null: none"
    )
    created_at: dt.datetime | None
    timings: JobTimings
    progress: float = Field(description="0..1: tiles computed / tiles planned")
    attempts: int = Field(description="times a worker started this job (more than 1 after a worker died)")
    queue_position: int | None = Field(None, description="jobs ahead of this one, while queued")
    estimated_wait_s: float | None = Field(None, description="rough seconds until it starts, while queued")
    input: InputInfo
    output: OutputInfo | None = None
    error: ErrorBody | None = None
    expires_at: dt.datetime | None = Field(
        None,
        description="when the upload (while queued or started) or the result and this record (once ended) are deleted",
    )
    webhook: WebhookInfo | None = Field(None, description="with a `callback_url`: how its delivery goes")
    links: JobLinks


class JobList(BaseModel):
    jobs: list[Job] = Field(description="newest first")
    next: str | None = Field(None, description="the next page (also in the `Link` header, `rel=next`); null: last")


class ModelInfo(BaseModel):
    name: str
    scale: int
    arch: str
    description: str
    has_weights: bool
    version: int | None = Field(
        None, description="the active registry version: what a request without `@version` gets (null for interpolation)"
    )
    sha256: str | None = Field(None, description="sha256 of the active version's weights, `builtin` for interpolation")
    versions: list[int] = Field(default_factory=list, description="registered versions; `model=name@N` pins one")
    loaded: bool = Field(description="a live worker has it loaded")
    loaded_versions: list[int] = Field(
        default_factory=list, description="versions live workers serve now (two during a swap)"
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="the active version's scores from its card: PSNR-Y/SSIM-Y per benchmark set "
        '(`{"Set5": {"psnr_y": 30.91, "ssim_y": 0.874, ...}}`), and its quality gate',
    )


class ModelList(BaseModel):
    default: str = Field(description="the model a request without `model` gets")
    default_scale: int = Field(description="the scale a request without `scale` gets")
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]


class WorkerModel(BaseModel):
    name: str
    scale: int
    version: int | None = Field(None, description="registry version served (null for interpolation)")
    sha256: str | None = None
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


# -- model registry (admin) -----------------------------------------------------------------------------------


class VersionInfo(BaseModel):
    name: str
    scale: int
    version: int = Field(description="1: the shipped weights; uploaded and trained versions count up from 2")
    arch: str
    sha256: str
    source: Literal["shipped", "uploaded", "trained"]
    created: str | None = Field(None, description="when the weights were made (their card)")
    registered_by: str | None = None
    registered_at: str | None = None
    run: str | None = Field(None, description="the training run that made it")
    promoted_by: str | None = Field(None, description="who made it active last")
    promoted_at: str | None = None
    active: bool = False
    notes: str = ""
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="the card's benchmark scores and `gate`: "
        "PSNR-Y/SSIM-Y on the gate set against the baseline, and whether it passed",
    )
    num_params: int = 0
    path: str


class VersionList(BaseModel):
    name: str
    scale: int
    active: int | None = Field(None, description="the version requests without `@version` get")
    history: list[int] = Field(
        description="activation stack, oldest first: a rollback returns to the one before the last"
    )
    versions: list[VersionInfo]


class PromoteRequest(_Request):
    version: JsonInt = Field(ge=1, description="the version to make active")
    by: Name | None = Field(None, description="who promotes (recorded)")
    force: StrictBool = Field(
        False, description="promote a version whose recorded gate failed the picture checks (dot grid, colour shift)"
    )


class RollbackRequest(_Request):
    by: Name | None = Field(None, description="who rolls back (recorded)")


class Rollout(BaseModel):
    complete: bool = Field(description="every live worker serving this model serves the new active version")
    workers: dict[str, int | None] = Field(description="live workers with this model loaded -> version they serve")
    waited_s: float


class Activation(BaseModel):
    name: str
    scale: int
    active: int
    previous: int | None
    changed: bool = Field(description="false when the version was active already")
    history: list[int]
    version: VersionInfo
    rollout: Rollout | None = Field(None, description="with `wait`: how far the workers have switched")


# -- training runs (admin) ------------------------------------------------------------------------------------


class TrainingRunRequest(_Request):
    stage: Literal["srresnet", "srgan", "espcn", "srcnn"]
    model: Name | None = Field(
        None,
        description="the model the run makes a version of (default: the stage's "
        "name); its architecture must be the stage's",
    )
    scale: JsonInt | None = Field(None, ge=2, le=8, description="default: SRGAN_DEFAULT_SCALE")
    data: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1,
        max_length=100,
        description="folders of HR training images, as the training worker sees them (searched recursively)",
    )
    val: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None, max_length=100, description="HR folders validated during the run (default: the gate set)"
    )
    recipe: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="a shipped recipe (`espcn_cpu`, `srresnet_gpu`, ...) or a TOML file the training worker sees"
    )
    steps: JsonInt | None = Field(None, ge=1, le=100_000_000, description="training steps (default: the recipe's)")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        max_length=100,
        description='any other training config field, e.g. {"lr": 1e-4, "batch_size": 8, "val_every": 500}',
    )
    init: Name | None = Field(
        None,
        description="start from: `active` (fine-tune the model's active version), "
        "`NAME` or `NAME@VERSION` (a registered version), or `scratch` "
        "(default: scratch; the srgan stage starts from the active srresnet)",
    )
    auto_promote: StrictBool = Field(False, description="promote the new version if it passes the quality gate")
    by: Name | None = Field(None, description="who asks (recorded on the version)")


class TrainingMetrics(BaseModel):
    losses: dict[str, float] = Field(default_factory=dict, description="mean losses since the previous log row")
    lr: float | None = None
    it_s: float | None = Field(None, description="steps per second")
    val: dict[str, Any] | None = Field(None, description="latest validation: PSNR-Y/SSIM-Y per folder")
    val_step: int | None = None


class TrainingResult(BaseModel):
    version: int = Field(description="the version the run registered")
    sha256: str
    gate: dict[str, Any] | None = None
    promoted: bool
    promote_reason: str | None = Field(None, description="why it was not promoted, with auto_promote")


class TrainingRunLinks(BaseModel):
    self: str
    samples: str


class TrainingRun(BaseModel):
    id: str
    status: JobStatus
    model: str
    scale: int
    stage: str
    step: int = 0
    total_steps: int | None = None
    progress: float = 0.0
    metrics: TrainingMetrics
    samples_step: int | None = Field(None, description="step of the latest sample grid (GET links.samples)")
    result: TrainingResult | None = None
    cancel_requested: bool = False
    attempts: int = 0
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    error: ErrorBody | None = None
    out: str | None = Field(None, description="the run's folder on the training worker")
    request: dict[str, Any]
    links: TrainingRunLinks


class TrainingRunList(BaseModel):
    runs: list[TrainingRun]
