"""``/healthz`` (the process answers), ``/readyz`` (Redis answers and a worker has its model loaded),
``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app import metrics, schemas
from app.deps import GatewayDep
from app.errors import ApiError, responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health, summary="Liveness: the gateway process answers")
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Ready,
    responses=responses(503),
    summary="Readiness: Redis answers and at least one live worker has a model loaded",
)
async def readyz(gw: GatewayDep) -> schemas.Ready:
    import redis

    from worker.retry import REDIS_DOWN

    try:
        depth = await gw.jobs.adepth()
        workers = await gw.alive_workers(max_age_s=0)
    except REDIS_DOWN as e:
        raise ApiError(503, "redis_unavailable", f"Redis does not answer: {e}", {"Retry-After": "2"}) from None
    except redis.RedisError as e:  # it answers, with an error (out of memory, a failed disk write, ...)
        raise ApiError(503, "redis_error", f"Redis answers with an error: {e}", {"Retry-After": "5"}) from None
    serving = [
        schemas.WorkerInfo(name=n, models=[m.model_dump() for m in w.models], busy=w.busy)
        for n, w in workers.items()
        if w.models
    ]
    if not serving:
        raise ApiError(
            503,
            "no_workers",
            f"no live worker with a loaded model serves queue {gw.jobs.name!r}",
            headers={"Retry-After": "5"},
        )
    return schemas.Ready(status="ready", queue_depth=depth, workers=serving)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics of the gateway",
    responses={200: {"content": {"text/plain": {}}}},
)
def prometheus_metrics(gw: GatewayDep) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    try:
        metrics.QUEUE_DEPTH.set(gw.jobs.depth())
        metrics.LIVE_WORKERS.set(len(gw.live_workers(max_age_s=0)))
        metrics.TRAINING_QUEUE_DEPTH.set(gw.runs.depth())
        for row in gw.catalog():
            if row["version"] is not None:
                metrics.ACTIVE_VERSION.labels(row["name"], str(row["scale"])).set(row["version"])
    except Exception:  # metrics must answer even when Redis does not
        pass
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
