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
def readyz(gw: GatewayDep) -> schemas.Ready:
    import redis

    try:
        depth = gw.queue_depth()
        workers = gw.live_workers(max_age_s=0)
    except redis.RedisError as e:
        raise ApiError(503, "redis_unavailable", f"Redis does not answer: {e}") from None
    serving = [
        schemas.WorkerInfo(name=n, models=w.get("models", []), busy=w.get("busy", 0))
        for n, w in workers.items()
        if w.get("models")
    ]
    if not serving:
        raise ApiError(
            503,
            "no_workers",
            f"no live worker with a loaded model serves queue {gw.queue.name!r}",
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
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    try:
        metrics.QUEUE_DEPTH.set(gw.queue_depth())
        metrics.LIVE_WORKERS.set(len(gw.live_workers(max_age_s=0)))
        metrics.TRAINING_QUEUE_DEPTH.set(int(gw.redis.llen(gw.training_queue.key)))
        for row in gw.catalog():
            if row["version"] is not None:
                metrics.ACTIVE_VERSION.labels(row["name"], str(row["scale"])).set(row["version"])
    except Exception:  # metrics must answer even when Redis does not
        pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
