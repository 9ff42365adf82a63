"""``GET /v1/models`` (public): what can be asked for. The admin routes of the model registry:
``GET|POST /v1/models/{name}/versions``, ``GET /v1/models/{name}/versions/{version}``,
``POST /v1/models/{name}/promote`` and ``POST /v1/models/{name}/rollback``.

``{name}`` is a model name (``espcn``: the scale is the ``scale`` parameter, else SRGAN_DEFAULT_SCALE; an upload
takes its card's) or a series ``NAME_xSCALE`` (``espcn_x2``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, File, Form, Query, Response, UploadFile
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from app import metrics, schemas
from app.admin import ADMIN_RESPONSES, AdminDep
from app.deps import GatewayDep, no_empty_form_fields
from app.errors import ApiError, responses
from app.service import Gateway
from model.zoo import SPECS

router = APIRouter(prefix="/v1", tags=["models"])
log = logging.getLogger(__name__)

# Registry refusals (model.registry.RegistryError codes) -> HTTP status.
REGISTRY_ERROR_STATUS = {
    "unknown_version": 404,
    "already_registered": 409,
    "nothing_to_roll_back": 409,
    "weightless_model": 404,  # an interpolation has no versions: none to list, get, promote or add to
    "invalid_card": 422,
    "wrong_architecture": 422,
    "invalid_weights": 422,
    "smoke_test_failed": 422,
    "quality_gate_failed": 422,
    "no_gate_set": 500,
}

# The models that have versions, as the documented shape of ``{name}`` (``espcn`` or ``espcn_x2``); the route
# still answers any other name itself (404 unknown_model or weightless_model), so this only documents.
_NAME_PATTERN = rf"^({'|'.join(n for n, spec in SPECS.items() if not spec.weightless)})(_x[1-8])?$"
NameParam = Annotated[
    str,
    PathParam(
        description="a model that has versions, `NAME` or `NAME_xSCALE`",
        json_schema_extra={"pattern": _NAME_PATTERN},
    ),
]
ScaleParam = Annotated[
    int | None, Query(ge=1, le=8, description="scale, when `name` does not say it (default: SRGAN_DEFAULT_SCALE)")
]
WaitParam = Annotated[
    float,
    Query(
        ge=0,
        description="seconds to wait until every live worker serving the model "
        "has switched (capped by SRGAN_MAX_WAIT_S)",
    ),
]


@router.get("/models", response_model=schemas.ModelList, summary="Models, scales, active and registered versions")
def list_models(gw: GatewayDep) -> schemas.ModelList:
    loaded: dict[tuple[str, int], set[int]] = {}
    for w in gw.live_workers().values():
        for m in w.models:
            versions = loaded.setdefault((m.name, m.scale), set())
            if m.version is not None:
                versions.add(m.version)
    models = [
        schemas.ModelInfo(
            name=r["name"],
            scale=r["scale"],
            arch=r["arch"],
            description=r["description"],
            has_weights=r["has_weights"],
            version=r["version"],
            sha256=r["sha256"],
            versions=sorted(r["versions"]),
            loaded=(r["name"], r["scale"]) in loaded,
            loaded_versions=sorted(loaded.get((r["name"], r["scale"]), ())),
            metrics=r.get("metrics", {}),
        )
        for r in gw.catalog()
    ]
    return schemas.ModelList(default=gw.settings.default_model, default_scale=gw.settings.default_scale, models=models)


# -- admin ---------------------------------------------------------------------------------------------------


def _series(gw: Gateway, name: str, scale: int | None, *, scale_from_card: bool = False) -> tuple[str, int | None]:
    """``NAME_xSCALE`` or ``NAME`` (+ ``scale``) -> (name, scale); a 404 for unknown models."""
    from model.specs import SPECS, parse_series

    base, named_scale = parse_series(name)
    if named_scale is not None:
        if scale is not None and scale != named_scale:
            raise ApiError(
                422, "invalid_request", f"{name} says scale {named_scale} but the scale parameter is {scale}"
            )
        name, scale = base, named_scale
    if name not in SPECS:
        raise ApiError(404, "unknown_model", f"unknown model {name!r}; choose one of {', '.join(SPECS)}")
    if scale is None and not scale_from_card:
        scale = gw.settings.default_scale
    if scale is not None and scale not in SPECS[name].scales:
        raise ApiError(
            404,
            "unknown_model",
            f"model {name!r} does not support scale {scale}; supported: {', '.join(map(str, SPECS[name].scales))}",
        )
    return name, scale


def _refused(action: str, e) -> ApiError:
    """A ``model.registry.RegistryError`` as the API's error (and counted)."""
    metrics.REGISTRY_ACTIONS.labels(action, e.code).inc()
    return ApiError(REGISTRY_ERROR_STATUS.get(e.code, 422), e.code, e.message)


def _info(rec, active: int | None) -> schemas.VersionInfo:
    return schemas.VersionInfo(**rec.to_dict(), active=rec.version == active)


def _by(by: str | None, default: str = "admin API") -> str:
    return (by or "").strip() or default


@router.get(
    "/models/{name}/versions",
    response_model=schemas.VersionList,
    dependencies=[AdminDep],
    responses=responses(*ADMIN_RESPONSES, 404, 422),
    summary="Every version of a model (admin)",
)
def list_versions(name: NameParam, gw: GatewayDep, scale: ScaleParam = None) -> schemas.VersionList:
    from model.registry import RegistryError

    name, scale = _series(gw, name, scale)
    try:
        records = gw.registry.versions(name, scale)
        active = gw.registry.active_version(name, scale)
        history = gw.registry.history(name, scale)
    except RegistryError as e:
        raise _refused("list", e) from None
    return schemas.VersionList(
        name=name, scale=scale, active=active, history=history, versions=[_info(r, active) for r in records]
    )


@router.get(
    "/models/{name}/versions/{version}",
    response_model=schemas.VersionInfo,
    dependencies=[AdminDep],
    responses=responses(*ADMIN_RESPONSES, 404, 422),
    summary="One version of a model (admin)",
)
def get_version(name: NameParam, version: int, gw: GatewayDep, scale: ScaleParam = None) -> schemas.VersionInfo:
    from model.registry import RegistryError

    name, scale = _series(gw, name, scale)
    try:
        return _info(gw.registry.version(name, scale, version), gw.registry.active_version(name, scale))
    except RegistryError as e:
        raise _refused("get", e) from None


@router.post(
    "/models/{name}/versions",
    status_code=201,
    response_model=schemas.VersionInfo,
    responses=responses(*ADMIN_RESPONSES, 404, 409, 413, 415, 422),
    dependencies=[AdminDep, no_empty_form_fields("force", "promote", "by")],
    summary="Upload a new version (admin): checked, smoke-tested and scored on the quality gate",
    description="Multipart: `weights` (safetensors) and `card` (its JSON model card, checked against the "
    "card schema of `model/card.py`: every bad field is a 422 `invalid_card` naming it). The version is "
    "accepted when the card and tensors agree with the model's architecture, a forward pass "
    "gives finite pixels of the right size, and its PSNR-Y on the gate set is no worse than "
    "the active version's minus SRGAN_GATE_TOLERANCE_DB (`force` registers it anyway). "
    "`promote` makes it active at once if it passed the gate.",
)
def upload_version(
    name: NameParam,
    gw: GatewayDep,
    response: Response,
    weights: Annotated[UploadFile, File(description="the weights, a .safetensors file")],
    card: Annotated[UploadFile, File(description="its model card (.json)")],
    force: Annotated[schemas.FormBool, Form(description="register even below the quality gate")] = False,
    promote: Annotated[schemas.FormBool, Form(description="make it active if it passed the gate")] = False,
    by: Annotated[str | None, Form(min_length=1, max_length=200, description="who uploads (recorded)")] = None,
    notes: Annotated[str, Form(max_length=2000)] = "",
    scale: ScaleParam = None,
) -> schemas.VersionInfo:
    from model.card import MAX_CARD_BYTES, CardError, parse_card
    from model.registry import RegistryError

    s = gw.settings
    name, scale = _series(gw, name, scale, scale_from_card=True)
    if weights.size is not None and weights.size > s.max_model_upload_bytes:
        metrics.REGISTRY_ACTIONS.labels("upload", "upload_too_large").inc()
        raise ApiError(
            413,
            "upload_too_large",
            f"the weights are {weights.size:,} bytes; the limit is "
            f"{s.max_model_upload_bytes:,} (SRGAN_MAX_MODEL_UPLOAD_BYTES)",
        )
    card_bytes = card.file.read(MAX_CARD_BYTES + 1)
    if len(card_bytes) > MAX_CARD_BYTES:
        metrics.REGISTRY_ACTIONS.labels("upload", "upload_too_large").inc()
        raise ApiError(413, "upload_too_large", f"the model card is larger than {MAX_CARD_BYTES:,} bytes")
    try:  # the schema, with bounds, before anything is built from it
        card_data = parse_card(card_bytes)
    except CardError as e:
        metrics.REGISTRY_ACTIONS.labels("upload", "invalid_card").inc()
        raise ApiError(422, "invalid_card", f"the model card is invalid: {e}") from None
    reg = gw.registry
    reg.root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=reg.root, prefix=".upload-", suffix=".safetensors") as tmp:
        shutil.copyfileobj(weights.file, tmp)
        tmp.flush()
        try:
            with gw.registry_lock:
                rec = reg.register(
                    name,
                    Path(tmp.name),
                    card_data,
                    scale=scale,
                    source="uploaded",
                    by=_by(by),
                    force=force,
                    notes=notes,
                )
                gw.invalidate_catalog()
                if promote and rec.gate and rec.gate.get("passed"):
                    reg.promote(name, rec.scale, rec.version, by=_by(by))
        except RegistryError as e:
            raise _refused("upload", e) from None
    metrics.REGISTRY_ACTIONS.labels("upload", "ok").inc()
    active = reg.active_version(name, rec.scale)
    rec = reg.version(name, rec.scale, rec.version)
    response.headers["Location"] = f"/v1/models/{name}_x{rec.scale}/versions/{rec.version}"
    return _info(rec, active)


async def _rollout(gw: Gateway, name: str, scale: int, version: int, wait: float) -> schemas.Rollout:
    """Wait (up to ``wait`` s) until every live worker that has ``name`` x``scale`` loaded serves ``version``."""
    t0 = time.monotonic()
    wait = min(wait, gw.settings.max_wait_s)
    while True:
        serving = {
            w: m.version
            for w, info in (await gw.alive_workers(max_age_s=0)).items()
            for m in info.models
            if m.name == name and m.scale == scale
        }
        complete = all(v == version for v in serving.values())
        waited = time.monotonic() - t0
        if complete or waited >= wait:
            return schemas.Rollout(complete=complete, workers=serving, waited_s=round(waited, 3))
        await asyncio.sleep(0.01)


async def _activation(gw: Gateway, action: str, change, name: str, scale: int, wait: float) -> schemas.Activation:
    gw.invalidate_catalog()
    metrics.REGISTRY_ACTIONS.labels(action, "ok").inc()
    rollout = await _rollout(gw, name, scale, change.record.version, wait) if wait > 0 else None
    return schemas.Activation(
        name=name,
        scale=scale,
        active=change.record.version,
        previous=change.previous,
        changed=change.changed,
        history=change.stack,
        rollout=rollout,
        version=_info(change.record, change.record.version),
    )


@router.post(
    "/models/{name}/promote",
    response_model=schemas.Activation,
    dependencies=[AdminDep],
    responses=responses(*ADMIN_RESPONSES, 404, 422),
    summary="Make a version active (admin)",
    description="Workers hear it at once, load the version beside the one they serve and switch between "
    "two batches. With `wait`, answers once they all have (or the wait is over).",
)
async def promote(
    name: NameParam, gw: GatewayDep, body: schemas.PromoteRequest, scale: ScaleParam = None, wait: WaitParam = 0.0
) -> schemas.Activation:
    from model.registry import RegistryError

    name, scale = _series(gw, name, scale)
    assert scale is not None  # _series gives the default scale unless asked to take it from a card
    try:
        change = await run_in_threadpool(
            gw.registry.promote, name, scale, body.version, by=_by(body.by), force=body.force
        )
    except RegistryError as e:
        raise _refused("promote", e) from None
    return await _activation(gw, "promote", change, name, scale, wait)


@router.post(
    "/models/{name}/rollback",
    response_model=schemas.Activation,
    dependencies=[AdminDep],
    responses=responses(*ADMIN_RESPONSES, 404, 409, 422),
    summary="Go back to the version active before the current one (admin)",
)
async def rollback(
    name: NameParam,
    gw: GatewayDep,
    body: Annotated[schemas.RollbackRequest | None, Body()] = None,
    scale: ScaleParam = None,
    wait: WaitParam = 0.0,
) -> schemas.Activation:
    from model.registry import RegistryError

    name, scale = _series(gw, name, scale)
    assert scale is not None  # _series gives the default scale unless asked to take it from a card
    try:
        change = await run_in_threadpool(gw.registry.rollback, name, scale, by=_by(body.by if body else None))
    except RegistryError as e:
        raise _refused("rollback", e) from None
    return await _activation(gw, "rollback", change, name, scale, wait)
