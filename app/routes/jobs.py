"""``GET /v1/jobs`` (the caller's jobs, newest first, by cursor), ``GET /v1/jobs/{id}`` (status, with long-poll,
and with ``If-None-Match`` a long-poll for any change), ``GET``/``HEAD /v1/jobs/{id}/result`` (ETag, ranges:
``app/results.py``), ``DELETE /v1/jobs/{id}``."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app import schemas
from app.deps import ClientDep, GatewayDep, client_of, gateway_of
from app.errors import ApiError, responses
from app.results import matches, result_response
from app.service import Gateway
from worker.records import JobRecord, UpscaleJob

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

WaitParam = Annotated[
    float,
    Query(
        ge=0, description="seconds to wait for the job to end before answering (long-poll; capped by SRGAN_MAX_WAIT_S)"
    ),
]


def job_resource(rec: JobRecord, gw: Gateway, position: int | None = None) -> schemas.Job:
    """The API's view of a job; ``position``: jobs ahead of it while queued."""
    job: UpscaleJob = rec.data  # type: ignore[assignment]
    queued = rec.status == "queued"
    if not queued:
        position = None
    accepted = rec.enqueued_at or rec.created_at
    wait_s = (rec.started_at - accepted).total_seconds() if rec.started_at and accepted else None
    proc_s = (rec.ended_at - rec.started_at).total_seconds() if rec.ended_at and rec.started_at else None
    return schemas.Job(
        id=rec.id,
        status=rec.status,
        model=job.model,
        scale=job.scale,
        format=job.format,
        model_version=None if queued else job.model_version,
        model_sha256=None if queued else job.model_sha256,
        realism=job.realism,
        created_at=rec.created_at,
        timings=schemas.JobTimings(
            queued_at=accepted,
            started_at=rec.started_at,
            ended_at=rec.ended_at,
            batch_started_at=None if queued else job.batch_started_at,
            queue_wait_s=wait_s,
            processing_s=proc_s,
        ),
        progress=round(rec.progress, 6),
        attempts=rec.attempts,
        queue_position=position,
        estimated_wait_s=gw.estimated_wait(position) if position is not None else None,
        input=schemas.InputInfo(**job.input.model_dump()),
        output=schemas.OutputInfo(**job.output.model_dump()) if job.output else None,
        error=schemas.ErrorBody(**job.error.model_dump()) if job.error else None,
        expires_at=job.expires_at,
        webhook=_webhook(rec),
        links=schemas.JobLinks(self=f"/v1/jobs/{rec.id}", result=f"/v1/jobs/{rec.id}/result"),
    )


def _webhook(rec: JobRecord) -> schemas.WebhookInfo | None:
    url = getattr(rec.data, "callback_url", None)
    if not url:
        return None
    state = rec.webhook.model_dump() if rec.webhook is not None else {"status": "pending"}
    return schemas.WebhookInfo(url=url, **state)


def state_etag(rec: JobRecord) -> str:
    """The job's weak ETag: it changes with its status, progress, attempts and webhook delivery (not with its
    queue position or wait estimate)."""
    hook = rec.webhook.model_dump_json() if rec.webhook is not None else ""
    state = f"{rec.status}|{rec.progress:.4f}|{rec.attempts}|{rec.started_at}|{hook}"
    return f'W/"{hashlib.sha256(state.encode()).hexdigest()[:16]}"'


def json_response(model: schemas.Job, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialize once. (Returning the model would make FastAPI validate it again against ``response_model``,
    which stays on the route for the documentation.)"""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json", headers=headers)


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job {job_id!r}: unknown, or expired and deleted")


def owned(rec: JobRecord | None, client: str | None) -> JobRecord | None:
    """The job if ``client`` may see it: with client keys, only its own jobs exist for it (another client's
    are 404, as if unknown); in open mode, every job."""
    return rec if rec is not None and rec.data.owner == client else None


async def _read(gw: Gateway, job_id: str, client: str | None, wait: float, with_result: bool = False,
                unless: str | None = None) -> tuple[JobRecord, bytes | None]:  # fmt: skip
    """The client's job (and its result, if asked and finished), after waiting up to ``wait`` s for it to end
    (``unless``: an If-None-Match value; then also for its state's ETag to stop matching it)."""
    wait = min(wait, gw.settings.max_wait_s)

    async def read():
        rec, data = await gw.jobs.aget(job_id, with_result)
        return (rec, data) if owned(rec, client) is not None else (None, None)

    def done(v) -> bool:  # with If-None-Match: any change (an ended job's webhook delivery too); else the end
        if v[0] is None:
            return True
        return not matches(unless, state_etag(v[0])) if unless is not None else v[0].terminal

    if wait > 0:  # a wait for a change re-reads the job twice a second: progress is written, not announced
        recheck = {} if unless is None else {"recheck_s": 0.5}
        rec, data = await gw.events.wait_until(job_id, wait, read, done, **recheck)
    else:
        rec, data = await read()
    if rec is None:
        raise not_found(job_id)
    return rec, data


CURSOR = r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,64}$"  # "<µs>.<job id>": a position in the caller's index


@router.get(
    "",
    response_model=schemas.JobList,
    responses=responses(422),
    summary="Your jobs, newest first (cursor pagination)",
    description="With client keys, the caller's own jobs; in open mode (no keys), every job. Pages are newest "
    'first; `next` (and the `Link: <...>; rel="next"` header) gives the next page until the last. Jobs stay '
    "listed while they are kept (`expires_at`). A job's `queue_position` is on `GET /v1/jobs/{id}`, not here.",
)
async def list_jobs(
    gw: GatewayDep,
    client: ClientDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR, description="opaque: the `cursor` of a previous page's `next` link")
    ] = None,
) -> Response:
    at = None
    if cursor:
        score, _, jid = cursor.partition(".")
        at = int(score), jid
    records, after = await gw.jobs.alist(client, limit, at)
    nxt = None if after is None else f"/v1/jobs?limit={limit}&cursor={after[0]}.{after[1]}"
    body = schemas.JobList(jobs=[job_resource(r, gw) for r in records], next=nxt)
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else None
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


@router.get(
    "/{job_id}",
    response_model=schemas.Job,
    responses={
        304: {"description": "with `If-None-Match`: the job is as that ETag says (after `wait`)"},
        **responses(404, 422),
    },  # fmt: skip
    summary="Job status, progress, timings and errors",
    description="`wait=N`: answer when the job ends, or after N s. With `If-None-Match: <the ETag of an earlier "
    "answer>` as well, answer as soon as anything but its queue position changes (status, progress, attempts, "
    "webhook), or `304` after N s: a long-poll that follows progress without polling.",
)
async def get_job(job_id: str, request: Request, wait: WaitParam = 0.0) -> Response:
    gw, client = gateway_of(request), client_of(request)
    unless = request.headers.get("if-none-match")
    rec, _ = await _read(gw, job_id, client, wait, unless=unless)
    etag = state_etag(rec)
    if matches(unless, etag):
        return Response(status_code=304, headers={"ETag": etag})
    position = None
    if rec.status == "queued":
        position = await gw.jobs.aposition(job_id)
        await gw.alive_workers()  # fresh rates for the wait estimate, without a thread
    return json_response(job_resource(rec, gw, position), headers={"ETag": etag})


IMAGE: dict[str, dict] = {"image/png": {}, "image/webp": {}, "image/jpeg": {}}
_H = {"schema": {"type": "string"}}
RESULT_HEADERS = {
    "ETag": {"description": "strong: the result's sha256, quoted", **_H},
    "Cache-Control": {"description": "`private, max-age=<s until it expires>, immutable`", **_H},
    "Accept-Ranges": {"description": "`bytes`", **_H},
}
RESULT_RESPONSES = {
    200: {"content": IMAGE, "description": "the upscaled image", "headers": RESULT_HEADERS},
    206: {"content": IMAGE, "description": "one byte range of it (`Range: bytes=a-b`)",
          "headers": {**RESULT_HEADERS, "Content-Range": {"description": "`bytes a-b/size`", **_H}}},
    304: {"description": "`If-None-Match` names its ETag: not modified", "headers": RESULT_HEADERS},
    **responses(404, 409, 410, 416, 422),
}  # fmt: skip
RESULT_DESCRIPTION = (
    "`ETag` (strong: the result's sha256), `Cache-Control`, `If-None-Match` -> `304`, `Range` (one byte range) "
    "-> `206` with `Content-Range` (`If-Range` honoured; past the end -> `416`), `Accept-Ranges: bytes`."
)


@router.get(
    "/{job_id}/result",
    responses=RESULT_RESPONSES,
    response_class=Response,
    summary="The upscaled image, once the job has finished",
    description=RESULT_DESCRIPTION,
)
async def get_result(job_id: str, request: Request, wait: WaitParam = 0.0) -> Response:
    return await _result(job_id, request, wait)


@router.head(
    "/{job_id}/result",
    responses=RESULT_RESPONSES,
    response_class=Response,
    summary="The result's headers (size, ETag, type) without its bytes",
    description=RESULT_DESCRIPTION,
)
async def head_result(job_id: str, request: Request, wait: WaitParam = 0.0) -> Response:
    return await _result(job_id, request, wait, head=True)


async def _result(job_id: str, request: Request, wait: float, head: bool = False) -> Response:
    rec, data = await _read(gateway_of(request), job_id, client_of(request), wait, with_result=True)
    job: UpscaleJob = rec.data  # type: ignore[assignment]
    if rec.status == "failed":
        code, message = (job.error.code, job.error.message) if job.error else ("failed", "the job failed")
        raise ApiError(409, "job_failed", f"the job failed: {code}: {message}")
    if rec.status == "canceled":
        raise ApiError(409, "job_canceled", "the job was canceled; it has no result")
    if rec.status != "finished":
        raise ApiError(
            409,
            "not_ready",
            f"the job is {rec.status} ({rec.progress:.0%}); ask again, or pass wait=SECONDS to wait for it",
            headers={"Retry-After": "1"},
        )
    if data is None:
        raise ApiError(410, "result_expired", "the result has expired and was deleted")
    return result_response(rec, data, request.headers, head=head)


@router.delete(
    "/{job_id}", response_model=schemas.Job, responses=responses(404, 409), summary="Cancel a job that has not started"
)
def cancel_job(job_id: str, gw: GatewayDep, client: ClientDep) -> Response:
    rec = owned(gw.jobs.get(job_id), client)
    if rec is None:
        raise not_found(job_id)
    if rec.status == "queued" and gw.jobs.cancel(rec):
        rec = gw.jobs.get(job_id)
        if rec is None:
            raise not_found(job_id)
    elif rec.status != "canceled":
        now = gw.jobs.get(job_id) or rec
        raise ApiError(409, "not_cancelable", f"the job is {now.status}; only queued jobs can be canceled")
    return json_response(job_resource(rec, gw))
