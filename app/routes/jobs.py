"""``GET /v1/jobs/{id}`` (status, with long-poll), ``GET /v1/jobs/{id}/result``, ``DELETE /v1/jobs/{id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app import schemas
from app.deps import ClientDep, GatewayDep
from app.errors import ApiError, responses
from app.service import Gateway
from model.imageio import EXTENSIONS
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
        links=schemas.JobLinks(self=f"/v1/jobs/{rec.id}", result=f"/v1/jobs/{rec.id}/result"),
    )


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


async def _read(gw: Gateway, job_id: str, client: str | None, wait: float, with_result: bool = False
                ) -> tuple[JobRecord, bytes | None]:  # fmt: skip
    """The client's job (and its result, if asked and finished), after waiting up to ``wait`` s for it to end."""
    wait = min(wait, gw.settings.max_wait_s)

    async def read():
        rec, data = await gw.jobs.aget(job_id, with_result)
        return (rec, data) if owned(rec, client) is not None else (None, None)

    if wait > 0:
        rec, data = await gw.events.wait_until(job_id, wait, read, lambda v: v[0] is None or v[0].terminal)
    else:
        rec, data = await read()
    if rec is None:
        raise not_found(job_id)
    return rec, data


@router.get(
    "/{job_id}",
    response_model=schemas.Job,
    responses=responses(404, 422),
    summary="Job status, progress, timings and errors",
)
async def get_job(job_id: str, gw: GatewayDep, client: ClientDep, wait: WaitParam = 0.0) -> Response:
    rec, _ = await _read(gw, job_id, client, wait)
    position = None
    if rec.status == "queued":
        position = await gw.jobs.aposition(job_id)
        await gw.alive_workers()  # fresh rates for the wait estimate, without a thread
    return json_response(job_resource(rec, gw, position))


@router.get(
    "/{job_id}/result",
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}}, "description": "the upscaled image"},
        **responses(404, 409, 410, 422),
    },
    response_class=Response,
    summary="The upscaled image, once the job has finished",
)
async def get_result(job_id: str, gw: GatewayDep, client: ClientDep, wait: WaitParam = 0.0) -> Response:
    rec, data = await _read(gw, job_id, client, wait, with_result=True)
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
    ctype = job.output.content_type if job.output else "application/octet-stream"
    return Response(
        data,
        media_type=ctype,
        headers={
            "Content-Disposition": f'inline; filename="{job_id}{EXTENSIONS.get(job.format, ".bin")}"',
            "X-Model-Version": "" if job.model_version is None else str(job.model_version),
            "X-Model-Sha256": job.model_sha256 or "",
            "Cache-Control": "private, max-age=60",
        },
    )


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
