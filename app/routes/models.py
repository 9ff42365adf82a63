"""``GET /v1/models``: what can be asked for."""

from __future__ import annotations

from fastapi import APIRouter

from app import schemas
from app.deps import GatewayDep

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=schemas.ModelList, summary="Models, scales, weights versions")
def list_models(gw: GatewayDep) -> schemas.ModelList:
    loaded = {(m["name"], m["scale"]) for w in gw.live_workers().values() for m in w.get("models", [])}
    models = [schemas.ModelInfo(name=r["name"], scale=r["scale"], arch=r["arch"], description=r["description"],
                                has_weights=r["has_weights"], version=r["version"],
                                loaded=(r["name"], r["scale"]) in loaded) for r in gw.catalog()]
    return schemas.ModelList(default=gw.settings.default_model, models=models)
