"""``POST /v1/upscale``: check an upload cheaply (its header, then its body as far as the format needs) and queue
it."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app import metrics, schemas
from app.deps import client_of, empty_fields_refused, gateway_of
from app.errors import IMAGE_ERROR_STATUS, ApiError, responses
from app.forms import Part, parse_form
from app.prefer import preferred_wait
from app.results import result_response
from app.routes.jobs import IMAGE, job_resource, json_response
from app.service import Gateway
from app.webhooks import CallbackRefused, check_callback_url
from worker.jobs import IdempotencyConflict
from worker.presence import estimated_seconds_per_job
from worker.records import InputInfo, JobRecord, UpscaleJob

router = APIRouter(prefix="/v1", tags=["jobs"])


def reject(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    metrics.JOBS_REJECTED.labels(code).inc()
    return ApiError(status, code, message, headers)


def resolve_model(gw: Gateway, spec: str, scale: int) -> tuple[str, int, int | None, dict]:
    """``name`` or ``name@version`` at ``scale`` -> (name, scale, pinned version number, catalog row), or a
    422. A version is a registry version number, or at least 6 hex digits of its sha256."""
    from model.registry import match_pin

    name, _, pin = spec.partition("@")

    def row_of(catalog: list[dict]) -> dict:
        rows = [r for r in catalog if r["name"] == name]
        if not rows:
            names = sorted({r["name"] for r in catalog})
            raise reject(422, "unknown_model", f"unknown model {name!r}; choose one of {', '.join(names)}")
        row = next((r for r in rows if r["scale"] == scale), None)
        if row is None:
            raise reject(
                422,
                "unknown_model",
                f"model {name!r} does not support scale {scale}; supported: {', '.join(str(r['scale']) for r in rows)}",
            )
        return row

    row = row_of(gw.catalog())
    if not pin:
        if not row["has_weights"]:
            raise reject(422, "model_unavailable", f"model {name!r} x{scale} has no weights yet")
        return name, scale, None, row
    if row["weightless"]:
        raise reject(422, "unknown_model_version", f"model {name!r} is an interpolation: it has no versions")
    version = match_pin(row["versions"], pin)
    if version is None:  # registered a moment ago, by another gateway?
        gw.invalidate_catalog()
        row = row_of(gw.catalog())
        version = match_pin(row["versions"], pin)
    if version is None:
        raise reject(
            422,
            "unknown_model_version",
            f"model {name!r} x{scale} has no version {pin!r}; versions: "
            f"{', '.join(map(str, row['versions'])) or 'none'} (a number, or 6+ hex digits of a sha256)",
        )
    return name, scale, version, row


def check_image(gw: Gateway, data: bytes, scale: int):
    """Read the header (pixel limits before any decoding), then check the body as cheaply as its format allows
    (:func:`model.imagecheck.verify`): what is accepted here, the worker can decode. Returns the ImageInfo."""
    from model.imagecheck import verify
    from model.imageinfo import ImageError, probe

    s = gw.settings
    if not data:
        raise reject(422, "empty_upload", "the uploaded file is empty (0 bytes)")
    try:
        info = probe(data, s.max_input_pixels)
        out_px = info.width * info.height * scale * scale
        if out_px > s.max_output_pixels:
            raise reject(
                422,
                "too_many_output_pixels",
                f"x{scale} of {info.width}x{info.height} is {out_px:,} output pixels; "
                f"the limit is {s.max_output_pixels:,}",
            )
        verify(data, info)
    except ImageError as e:
        raise reject(IMAGE_ERROR_STATUS.get(e.code, 422), e.code, str(e)) from None
    return info


# Documented by hand, and the lengths _headers() holds them to: the route reads its headers itself.
_HEADERS: list[dict[str, Any]] = [
    {"name": "idempotency-key", "in": "header", "required": False, "description": "same key + same bytes: the same job",
     "schema": {"type": "string", "maxLength": 200, "title": "Idempotency-Key"}},
    {"name": "prefer", "in": "header", "required": False,
     "description": "`wait=N`: answer with the image if it is done within N s",
     "schema": {"type": "string", "maxLength": 200, "title": "Prefer"}},
]  # fmt: skip
_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/UpscaleForm"}}}}


@router.post(
    "/upscale",
    status_code=202,
    response_model=schemas.Job,
    responses={
        200: {
            "content": IMAGE,
            "description": "with `Prefer: wait=N`: the job finished within N s; the image, "
            "with the job's `Location`, `ETag` and model version headers",
        },
        **responses(409, 413, 415, 422, 429, 503),
    },
    openapi_extra={"parameters": _HEADERS, "requestBody": _BODY},
    summary="Queue an image for upscaling",
    description="Multipart upload. Answers 202 with the job and a Location header; poll the job (or "
    "long-poll with `wait`), then fetch `links.result`. With `Prefer: wait=N` (RFC 7240; N capped by "
    "SRGAN_MAX_WAIT_S) it waits up to N s for the job: finished in time, the answer is `200` with the image; "
    "otherwise (still running, or failed) the usual `202` job. `Preference-Applied: wait=N` says it waited. "
    "With `callback_url`, the job's JSON is POSTed there, signed, when it ends (see the README).",
)
async def upscale(request: Request) -> Response:
    # The form and headers are read and validated here in one step, not as FastAPI parameters: per field, its
    # dependency solving cost this route more CPU than the rest of its work (the overhead benchmark); the body
    # is bounded before it is read (app/guards.py) and split whole (app/forms.py).
    gw, client = gateway_of(request), client_of(request)
    idempotency_key, prefer = _headers(request)
    fields, data = _form(parse_form(await request.body(), request.headers.get("content-type")))
    s = gw.settings
    model, scale, realism = fields.model, fields.scale, fields.realism
    format, quality, callback_url = fields.format, fields.quality, fields.callback_url
    scale = scale or s.default_scale
    if realism is not None:
        realism = check_realism(gw, model, scale, realism)
        model = "srgan"
    name, scale, pin, _ = resolve_model(gw, model or s.default_model, scale)
    if callback_url is not None:
        await check_callback(gw, callback_url)
    if len(data) > s.max_upload_bytes:
        raise reject(413, "upload_too_large", f"the upload is larger than {s.max_upload_bytes:,} bytes")
    mark = gw.events.mark()  # before the job exists: its end cannot have been announced earlier
    # Header checks, hashing and the Redis round trips (rq is synchronous) in one hand-off to the thread pool.
    rec, created, position = await run_in_threadpool(
        accept,
        gw,
        data,
        name=name,
        scale=scale,
        pin=pin,
        fmt=format or s.default_format,
        quality=quality or s.default_quality,
        idempotency_key=idempotency_key,
        owner=client,
        callback_url=callback_url,
        realism=realism,
    )
    headers = {"Location": f"/v1/jobs/{rec.id}"}
    if created:
        metrics.UPLOAD_BYTES.observe(len(data))
        metrics.JOBS_ENQUEUED.labels(name).inc()
    else:
        headers["Idempotent-Replayed"] = "true"
    wait = preferred_wait(prefer, s.max_wait_s)
    if wait is not None:
        return await waited(gw, request, rec, wait, position, headers, mark)
    return json_response(job_resource(rec, gw, position), 202, headers)


_TEXT = tuple(schemas.UpscaleForm.model_fields)


def _form(parts: dict[str, list[Part]]) -> tuple[schemas.UpscaleForm, bytes]:
    """The form's fields and its file, or a 422 naming each invalid field (as FastAPI words them); of a field
    sent twice, the last. An empty field is refused: a browser sends one for an untouched input, and
    ``model=""`` must not mean the default."""
    empty = [n for n in _TEXT if any(not p.data for p in parts.get(n, ()))]
    if empty:
        raise empty_fields_refused(empty)
    errors: list[dict] = []
    fields = None
    try:
        fields = schemas.UpscaleForm.model_validate({n: parts[n][-1].text() for n in _TEXT if n in parts})
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
    if "file" not in parts:
        errors.append({"type": "missing", "loc": ("body", "file"), "msg": "Field required"})
    if errors or fields is None:
        raise RequestValidationError(errors)
    return fields, parts["file"][-1].data


def _headers(request: Request) -> tuple[str | None, str | None]:
    """``Idempotency-Key`` and ``Prefer``, held to their documented lengths (:data:`_HEADERS`), or a 422."""
    idempotency_key, prefer = values = tuple(request.headers.get(h["name"]) for h in _HEADERS)
    long = [(h["name"], h["schema"]["maxLength"]) for h, v in zip(_HEADERS, values, strict=True)
            if v is not None and len(v) > h["schema"]["maxLength"]]  # fmt: skip
    if long:
        raise RequestValidationError([{"type": "string_too_long", "loc": ("header", n),
                                       "msg": f"String should have at most {m} characters"} for n, m in long])  # fmt: skip
    return idempotency_key, prefer


async def waited(gw: Gateway, request: Request, rec: JobRecord, wait: float, position: int | None,
                 headers: dict[str, str], mark: int | None) -> Response:  # fmt: skip
    """``Prefer: wait=N``: the image if the job finishes within ``wait`` s, else the job as it is then (202).
    ``rec`` was read (or written) after ``gw.events.mark()`` returned ``mark``: it is not read again unless
    the job's end was announced since."""
    headers = {**headers, "Preference-Applied": f"wait={wait:g}", "Vary": "Prefer"}
    result = None
    if not rec.terminal:  # an idempotent replay may have ended already
        ended, result = await gw.events.wait_until(
            rec.id,
            wait,
            lambda: gw.jobs.aget(rec.id, True),
            lambda v: v[0] is None or v[0].terminal,
            initial=(rec, None),
            since=mark,
        )
        rec = ended or rec
    elif rec.status == "finished":
        _, result = await gw.jobs.aget(rec.id, True)
    if rec.status == "finished" and result is not None:
        headers["Content-Location"] = f"/v1/jobs/{rec.id}/result"
        return result_response(rec, result, request.headers, extra=headers, conditional=False)
    if rec.status == "queued":
        position = await gw.jobs.aposition(rec.id)
    return json_response(job_resource(rec, gw, position), 202, headers)


def check_realism(gw: Gateway, model: str | None, scale: int, realism: float) -> float:
    """A realism the workers can blend (``model.blend``; both models with weights at ``scale``), or a 422."""
    from model.blend import REALISM_MODELS
    from model.blend import check_realism as rounded

    if model not in (None, REALISM_MODELS[1]):
        raise reject(422, "invalid_realism",
                     f"realism blends {' and '.join(REALISM_MODELS)}: leave out model or name "
                     f"{REALISM_MODELS[1]} (not {model!r}; no @version)")  # fmt: skip
    for name in REALISM_MODELS:
        resolve_model(gw, name, scale)
    try:
        return rounded(realism)
    except ValueError as e:
        raise reject(422, "invalid_realism", str(e)) from None


async def check_callback(gw: Gateway, url: str) -> None:
    """A callback URL this gateway will call (signed, to a public address), or a 422."""
    if gw.settings.webhook_secret is None:
        raise reject(422, "webhooks_disabled",
                     "this gateway sends no webhooks: SRGAN_WEBHOOK_SECRET is not set; leave out callback_url")  # fmt: skip
    try:
        await check_callback_url(url, gw.settings.webhook_allow_private)
    except CallbackRefused as e:
        raise reject(422, "callback_url_refused", str(e)) from None


def accept(
    gw: Gateway,
    data: bytes,
    *,
    name: str,
    scale: int,
    pin: int | None,
    fmt: str,
    quality: int,
    idempotency_key: str | None,
    owner: str | None = None,
    callback_url: str | None = None,
    realism: float | None = None,
) -> tuple[JobRecord, bool, int | None]:
    """Check the upload and queue it (or find the job its idempotency key made). Returns (record, created,
    position in the queue)."""
    s = gw.settings
    info = check_image(gw, data, scale)
    depth = 0

    def admit(queued: int) -> None:
        nonlocal depth
        depth = queued
        if depth >= s.max_queue_depth:
            per_job = estimated_seconds_per_job(gw.live_workers()) or 1.0
            retry = max(1, math.ceil((depth - s.max_queue_depth + 1) * per_job))
            raise reject(
                429,
                "queue_full",
                f"{depth} jobs are waiting (the limit is {s.max_queue_depth}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    doc = UpscaleJob(
        owner=owner,
        callback_url=callback_url,
        model=name,
        scale=scale,
        version_pin=pin,
        realism=realism,
        format=fmt,
        quality=quality,
        input=InputInfo(
            format=info.format,
            width=info.width,
            height=info.height,
            mode=info.mode,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        ),
    )
    try:
        rec, created = gw.jobs.enqueue(doc, data, idempotency_key=idempotency_key, admit=admit)
    except IdempotencyConflict:
        raise reject(
            409,
            "idempotency_conflict",
            "this Idempotency-Key was used before with other bytes or options; use a new key for a new request",
        ) from None
    if created:
        gw.live_workers()  # keeps the cached rates behind estimated_wait_s fresh
        return rec, True, depth
    return rec, False, gw.jobs.position(rec.id) if rec.status == "queued" else None
