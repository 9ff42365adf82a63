"""``GET /v1/jobs/{id}`` (status, with long-poll), ``GET /v1/jobs/{id}/result``, ``DELETE /v1/jobs/{id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app import schemas
from app.deps import GatewayDep
from app.errors import ApiError, responses
from app.service import Gateway
from model.imageio import EXTENSIONS
from worker import jobs as J

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

WaitParam = Annotated[
    float,
    Query(
        ge=0, description="seconds to wait for the job to end before answering (long-poll; capped by SRGAN_MAX_WAIT_S)"
    ),
]


def job_resource(view: J.JobView, gw: Gateway, position: int | None = None) -> schemas.Job:
    """The API's view of a job; ``position``: jobs ahead of it while queued."""
    if view.status != "queued":
        position = None
    queued = view.enqueued_at or view.created_at
    wait_s = (view.started_at - queued).total_seconds() if view.started_at and queued else None
    proc_s = (view.ended_at - view.started_at).total_seconds() if view.ended_at and view.started_at else None
    return schemas.Job(
        id=view.id,
        status=view.status,
        model=view.model,
        scale=view.scale,
        format=view.format,
        model_version=view.model_version,
        model_sha256=view.model_sha256,
        created_at=view.created_at,
        timings=schemas.JobTimings(
            queued_at=queued,
            started_at=view.started_at,
            ended_at=view.ended_at,
            batch_started_at=view.meta.get("batch_started_at") if view.status != "queued" else None,
            queue_wait_s=wait_s,
            processing_s=proc_s,
        ),
        progress=round(view.progress, 4),
        attempts=view.attempts,
        queue_position=position,
        estimated_wait_s=gw.estimated_wait(position) if position is not None else None,
        input=schemas.InputInfo(**view.input),
        output=view.output,
        error=view.error,
        expires_at=view.expires_at,
        links=schemas.JobLinks(self=f"/v1/jobs/{view.id}", result=f"/v1/jobs/{view.id}/result"),
    )


def json_response(model: schemas.Job, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialize once. (Returning the model would make FastAPI validate it again against ``response_model``,
    which stays on the route for the documentation.)"""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json", headers=headers)


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job {job_id!r}: unknown, or expired and deleted")


async def _read(gw: Gateway, job_id: str, wait: float, with_result: bool = False) -> tuple[J.JobView, bytes | None]:
    """The job (and its result, if asked and finished), after waiting up to ``wait`` s for it to end."""
    wait = min(wait, gw.settings.max_wait_s)

    async def read():
        return await gw.aview(job_id, with_result)

    if wait > 0:
        view, data = await gw.events.wait_until(job_id, wait, read, lambda v: v[0] is None or v[0].terminal)
    else:
        view, data = await read()
    if view is None:
        raise not_found(job_id)
    return view, data


@router.get(
    "/{job_id}",
    response_model=schemas.Job,
    responses=responses(404, 422),
    summary="Job status, progress, timings and errors",
)
async def get_job(job_id: str, gw: GatewayDep, wait: WaitParam = 0.0) -> Response:
    view, _ = await _read(gw, job_id, wait)
    position = None
    if view.status == "queued":
        position = await gw.aposition(job_id)
        await gw.alive_workers()  # fresh rates for the wait estimate, without a thread
    return json_response(job_resource(view, gw, position))


@router.get(
    "/{job_id}/result",
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}}, "description": "the upscaled image"},
        **responses(404, 409, 410, 422),
    },
    response_class=Response,
    summary="The upscaled image, once the job has finished",
)
async def get_result(job_id: str, gw: GatewayDep, wait: WaitParam = 0.0) -> Response:
    view, data = await _read(gw, job_id, wait, with_result=True)
    if view.status == "failed":
        err = view.error or {"code": "failed", "message": "the job failed"}
        raise ApiError(409, "job_failed", f"the job failed: {err['code']}: {err['message']}")
    if view.status == "canceled":
        raise ApiError(409, "job_canceled", "the job was canceled; it has no result")
    if view.status != "finished":
        raise ApiError(
            409,
            "not_ready",
            f"the job is {view.status} ({view.progress:.0%}); ask again, or pass wait=SECONDS to wait for it",
            headers={"Retry-After": "1"},
        )
    if data is None:
        raise ApiError(410, "result_expired", "the result has expired and was deleted")
    ctype = (view.output or {}).get("content_type", "application/octet-stream")
    return Response(
        data,
        media_type=ctype,
        headers={
            "Content-Disposition": f'inline; filename="{job_id}{EXTENSIONS.get(view.format, ".bin")}"',
            "X-Model-Version": "" if view.model_version is None else str(view.model_version),
            "X-Model-Sha256": view.model_sha256 or "",
            "Cache-Control": "private, max-age=60",
        },
    )


@router.delete(
    "/{job_id}", response_model=schemas.Job, responses=responses(404, 409), summary="Cancel a job that has not started"
)
def cancel_job(job_id: str, gw: GatewayDep) -> schemas.Job:
    job = J.fetch_job(gw.queue, job_id)
    if job is None or job.origin != gw.queue.name:
        raise not_found(job_id)
    status = J.JobView.from_job(job).status
    if status == "canceled":
        return job_resource(J.JobView.from_job(job), gw)
    if status != "queued" or not J.cancel(gw.queue, gw.storage, gw.keys, job):
        view = gw.view(job_id)
        raise ApiError(
            409, "not_cancelable", f"the job is {view.status if view else status}; only queued jobs can be canceled"
        )
    view = gw.view(job_id)
    if view is None:
        raise not_found(job_id)
    return job_resource(view, gw)
