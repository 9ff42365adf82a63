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
from worker import runs as T
from worker.records import JobRecord, TrainingRun

router = APIRouter(prefix="/v1/training-runs", tags=["training"], dependencies=[AdminDep])


def _run(gw: Gateway, run_id: str) -> JobRecord:
    rec = gw.runs.get(run_id)
    if rec is None or not isinstance(rec.data, TrainingRun):
        raise ApiError(404, "run_not_found", f"no training run {run_id!r}: unknown, or expired and deleted")
    return rec


def _resource(gw: Gateway, rec: JobRecord) -> schemas.TrainingRun:
    run: TrainingRun = rec.data  # type: ignore[assignment]
    cancel = rec.status == "started" and bool(gw.redis.exists(T.cancel_key(gw.settings, rec.id)))
    out = run.output if rec.status == "finished" else None
    return schemas.TrainingRun(
        id=rec.id,
        status=rec.status,
        model=run.model,
        scale=run.scale,
        stage=run.stage,
        step=run.step,
        total_steps=run.total_steps,
        progress=round(rec.progress, 6),
        metrics=schemas.TrainingMetrics(
            losses=run.losses, lr=run.lr, it_s=run.it_s, val=run.val, val_step=run.val_step
        ),
        samples_step=run.samples_step,
        result=schemas.TrainingResult(**out.model_dump()) if out else None,
        cancel_requested=cancel,
        attempts=rec.attempts,
        created_at=rec.created_at,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        error=schemas.ErrorBody(**run.error.model_dump()) if run.error else None,
        out=run.out,
        request=run.request,
        links=schemas.TrainingRunLinks(
            self=f"/v1/training-runs/{rec.id}", samples=f"/v1/training-runs/{rec.id}/samples"
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
    from model.specs import SPECS
    from training.config import stage_arch

    model = body.model or body.stage
    scale = body.scale or gw.settings.default_scale
    spec = SPECS.get(model)
    if spec is None or spec.weightless:
        learned = [n for n, s in SPECS.items() if not s.weightless]
        raise _refused(422, "invalid_training_run", f"unknown model {model!r}; choose one of {', '.join(learned)}")
    if spec.arch != stage_arch(body.stage):
        raise _refused(
            422,
            "invalid_training_run",
            f"the {body.stage} stage trains a {stage_arch(body.stage)}; {model} is a {spec.arch}",
        )
    if scale not in spec.scales:
        raise _refused(422, "invalid_training_run", f"{model} does not support scale {scale}")
    request = body.model_dump()
    request.update(model=model, scale=scale)
    try:  # the same config the worker will build, without its output folder and init weights
        T.build_config(request, model=model, scale=scale, out=None)
    except (ValueError, FileNotFoundError) as e:
        raise _refused(422, "invalid_training_run", str(e)) from None
    rec = T.enqueue_run(gw.runs, model=model, scale=scale, request=request)
    metrics.REGISTRY_ACTIONS.labels("training_run", "ok").inc()
    response.headers["Location"] = f"/v1/training-runs/{rec.id}"
    return _resource(gw, rec)


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
    ids = gw.runs.queued_ids() + gw.runs.started_ids()
    for which in ("finished", "failed", "canceled"):
        ids += gw.runs.registry_ids(which, limit)
    runs = [r for r in gw.runs.get_many(list(dict.fromkeys(ids))) if r is not None]
    runs.sort(key=lambda r: r.created_at.timestamp() if r.created_at else 0.0, reverse=True)
    return schemas.TrainingRunList(runs=[_resource(gw, r) for r in runs[:limit]])


@router.get(
    "/{run_id}",
    response_model=schemas.TrainingRun,
    responses=responses(*ADMIN_RESPONSES, 404),
    summary="A training run: status, step, progress, latest metrics (admin)",
)
def get_run(run_id: str, gw: GatewayDep) -> schemas.TrainingRun:
    return _resource(gw, _run(gw, run_id))


@router.get(
    "/{run_id}/samples",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "LR (nearest) / SR / HR rows of the latest validation"},
        **responses(*ADMIN_RESPONSES, 404),
    },
    summary="The run's latest sample grid (admin)",
)
def get_samples(run_id: str, gw: GatewayDep) -> Response:
    rec = _run(gw, run_id)
    data = gw.storage.get("samples", rec.id)
    if data is None:
        raise ApiError(404, "no_samples", "the run has no sample grid yet (one is made at each validation)")
    return Response(
        data,
        media_type="image/png",
        headers={"Cache-Control": "no-cache", "X-Step": str(rec.data.samples_step or "")},  # type: ignore[union-attr]
    )


@router.delete(
    "/{run_id}",
    response_model=schemas.TrainingRun,
    responses=responses(*ADMIN_RESPONSES, 404, 409),
    summary="Cancel a training run (admin)",
    description="A queued run is canceled at once (200); a running one stops at its next step (202, "
    "`cancel_requested`), keeping its checkpoint and registering nothing.",
)
def cancel_run(run_id: str, gw: GatewayDep, response: Response) -> schemas.TrainingRun:
    rec = _run(gw, run_id)
    if rec.status == "queued":
        if gw.runs.cancel(rec):
            metrics.REGISTRY_ACTIONS.labels("training_cancel", "ok").inc()
            return _resource(gw, _run(gw, run_id))
        rec = _run(gw, run_id)  # a worker took it meanwhile
    if rec.status == "started":
        gw.redis.set(T.cancel_key(gw.settings, run_id), "1", ex=gw.settings.training_result_ttl_s)
        metrics.REGISTRY_ACTIONS.labels("training_cancel", "ok").inc()
        response.status_code = 202
        return _resource(gw, rec)
    if rec.status == "canceled":
        return _resource(gw, rec)
    raise ApiError(409, "not_cancelable", f"the run has {rec.status}; only queued or running runs can be canceled")
