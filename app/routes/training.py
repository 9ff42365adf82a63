"""Training runs (admin): ``POST /v1/training-runs`` queues one for a training worker, ``GET`` shows it (status,
step, progress, latest metrics and sample grid), ``DELETE`` cancels it. See ``worker/training.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app import metrics, schemas
from app.admin import ADMIN_RESPONSES, AdminDep
from app.deps import GatewayDep
from app.errors import ApiError, responses
from app.service import Gateway
from worker import jobs as J
from worker import runs as T

router = APIRouter(prefix="/v1/training-runs", tags=["training"], dependencies=[AdminDep])


def _job(gw: Gateway, run_id: str):
    job = J.fetch_job(gw.training_queue, run_id)
    if job is None or job.origin != gw.training_queue.name or (job.meta or {}).get("kind") != "training":
        raise ApiError(404, "run_not_found", f"no training run {run_id!r}: unknown, or expired and deleted")
    return job


def _resource(gw: Gateway, job) -> schemas.TrainingRun:
    view = J.JobView.from_job(job)
    m = view.meta
    out = m.get("output") if view.status == "finished" else None
    cancel = view.status == "started" and bool(gw.redis.exists(T.cancel_key(gw.settings, job.id)))
    return schemas.TrainingRun(
        id=job.id,
        status=view.status,
        model=m.get("model", ""),
        scale=int(m.get("scale") or 0),
        stage=m.get("stage", ""),
        step=int(m.get("step") or 0),
        total_steps=m.get("total_steps"),
        progress=round(view.progress, 6),  # 4 places would show 0 for the first 50 of 100k steps
        metrics=schemas.TrainingMetrics(
            losses=m.get("losses") or {},
            lr=m.get("lr"),
            it_s=m.get("it_s"),
            val=m.get("val"),
            val_step=m.get("val_step"),
        ),
        samples_step=m.get("samples_step"),
        result=schemas.TrainingResult(**out) if out else None,
        cancel_requested=cancel,
        attempts=view.attempts,
        created_at=view.created_at,
        started_at=view.started_at,
        ended_at=view.ended_at,
        error=view.error,
        out=m.get("out"),
        request=m.get("request") or {},
        links=schemas.TrainingRunLinks(
            self=f"/v1/training-runs/{job.id}", samples=f"/v1/training-runs/{job.id}/samples"
        ),
    )


@router.post(
    "",
    status_code=202,
    response_model=schemas.TrainingRun,
    responses=responses(*ADMIN_RESPONSES, 422),
    summary="Queue a training run (admin)",
    description="Checked here (stage, model, recipe and overrides), then run by a training worker "
    "(`srgan worker --queue training`). A finished run registers its weights as a new version; "
    "with `auto_promote` the version is promoted if it passes the quality gate.",
)
def start_run(body: schemas.TrainingRunRequest, gw: GatewayDep, response: Response) -> schemas.TrainingRun:
    from model.zoo import SPECS

    model = body.model or body.stage
    scale = body.scale or gw.settings.default_scale
    spec = SPECS.get(model)
    if spec is None or spec.weightless:
        learned = [n for n, s in SPECS.items() if not s.weightless]
        raise _refused(422, "invalid_training_run", f"unknown model {model!r}; choose one of {', '.join(learned)}")
    if spec.arch != T.stage_arch(body.stage):
        raise _refused(
            422,
            "invalid_training_run",
            f"the {body.stage} stage trains a {T.stage_arch(body.stage)}; {model} is a {spec.arch}",
        )
    if scale not in spec.scales:
        raise _refused(422, "invalid_training_run", f"{model} does not support scale {scale}")
    request = body.model_dump()
    request.update(model=model, scale=scale)
    try:  # the same config the worker will build, without its output folder and init weights
        T.build_config(request, model=model, scale=scale, out=None)
    except (ValueError, FileNotFoundError) as e:
        raise _refused(422, "invalid_training_run", str(e)) from None
    job = T.enqueue_run(gw.training_queue, gw.settings, model=model, scale=scale, request=request)
    metrics.REGISTRY_ACTIONS.labels("training_run", "ok").inc()
    response.headers["Location"] = f"/v1/training-runs/{job.id}"
    return _resource(gw, job)


def _refused(status: int, code: str, message: str) -> ApiError:
    metrics.REGISTRY_ACTIONS.labels("training_run", code).inc()
    return ApiError(status, code, message)


@router.get(
    "",
    response_model=schemas.TrainingRunList,
    responses=responses(*ADMIN_RESPONSES),
    summary="Recent training runs, newest first (admin)",
)
def list_runs(gw: GatewayDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> schemas.TrainingRunList:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    q = gw.training_queue
    ids = list(q.get_job_ids())
    for registry in (q.started_job_registry, q.finished_job_registry, q.failed_job_registry, q.canceled_job_registry):
        ids += registry.get_job_ids()
    jobs = [
        j
        for j in Job.fetch_many(list(dict.fromkeys(ids)), connection=gw.redis, serializer=JSONSerializer)
        if j is not None and (j.meta or {}).get("kind") == "training"
    ]
    jobs.sort(key=lambda j: j.created_at.timestamp() if j.created_at else 0.0, reverse=True)
    return schemas.TrainingRunList(runs=[_resource(gw, j) for j in jobs[:limit]])


@router.get(
    "/{run_id}",
    response_model=schemas.TrainingRun,
    responses=responses(*ADMIN_RESPONSES, 404),
    summary="A training run: status, step, progress, latest metrics (admin)",
)
def get_run(run_id: str, gw: GatewayDep) -> schemas.TrainingRun:
    return _resource(gw, _job(gw, run_id))


@router.get(
    "/{run_id}/samples",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "LR (nearest) / SR / HR rows of the latest validation"},
        **responses(*ADMIN_RESPONSES, 404, 409),
    },
    summary="The run's latest sample grid (admin)",
)
def get_samples(run_id: str, gw: GatewayDep) -> Response:
    job = _job(gw, run_id)
    data = gw.storage.get("samples", job.id)
    if data is None:  # like a job's result before it has finished: the run exists, its grid not yet
        raise ApiError(
            409,
            "no_samples",
            "the run has no sample grid yet (one is made at each validation)",
            headers={"Retry-After": "10"},
        )
    return Response(
        data,
        media_type="image/png",
        headers={"Cache-Control": "no-cache", "X-Step": str(job.meta.get("samples_step") or "")},
    )


@router.delete(
    "/{run_id}",
    response_model=schemas.TrainingRun,
    responses={
        202: {"model": schemas.TrainingRun, "description": "a running run was asked to stop at its next step"},
        **responses(*ADMIN_RESPONSES, 404, 409),
    },
    summary="Cancel a training run (admin)",
    description="A queued run is canceled at once (200); a running one stops at its next step (202, "
    "`cancel_requested`), keeping its checkpoint and registering nothing.",
)
def cancel_run(run_id: str, gw: GatewayDep, response: Response) -> schemas.TrainingRun:
    job = _job(gw, run_id)
    status = J.JobView.from_job(job).status
    if status == "queued":
        keys = J.Keys(gw.settings.key_prefix, gw.training_queue.name)
        if J.cancel(gw.training_queue, gw.storage, keys, job):
            metrics.REGISTRY_ACTIONS.labels("training_cancel", "ok").inc()
            return _resource(gw, _job(gw, run_id))
        job = _job(gw, run_id)  # a worker took it meanwhile
        status = J.JobView.from_job(job).status
    if status == "started":
        gw.redis.set(T.cancel_key(gw.settings, run_id), "1", ex=gw.settings.training_result_ttl_s)
        metrics.REGISTRY_ACTIONS.labels("training_cancel", "ok").inc()
        response.status_code = 202
        return _resource(gw, job)
    if status == "canceled":
        return _resource(gw, job)
    raise ApiError(409, "not_cancelable", f"the run has {status}; only queued or running runs can be canceled")
