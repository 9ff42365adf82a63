"""``/openapi.json`` as the contract: what FastAPI generates, completed with what the guards and handlers answer.

:func:`document` replaces the app's ``openapi()``. On top of FastAPI's document it

- gives every error status the :class:`app.schemas.Problem` schema under ``application/problem+json`` (and drops
  FastAPI's ``HTTPValidationError``, which this server never sends);
- adds the statuses every operation can answer besides its own: 500; 503 where Redis is behind it; 422 where
  it takes parameters or a body; 400 (a body that cannot be parsed), 413 and 415 (:mod:`app.guards`) where it
  takes a body; 401 where a client key is needed;
- drops ``null`` from optional query, path, header and multipart fields, which are text or absent on the wire;
- links a created job or training run to the operations that take its id;
- declares the ``ClientKey`` bearer scheme on the operations that need one, when this gateway has client keys
  (:mod:`app.auth`), so the document describes the gateway that serves it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.auth import ClientKeys, needs_client_key
from app.errors import DESCRIPTIONS, PROBLEM_MEDIA_TYPE
from app.schemas import Problem, upscale_form_schema

__all__ = ["document"]

_NO_REDIS = {"/healthz", "/metrics"}
# What a created resource's id leads to (OpenAPI links): (path, method, status) -> [(path, method, parameter)].
_LINKS = {
    ("/v1/upscale", "post", "202"): [
        ("/v1/jobs/{job_id}", "get", "job_id"),
        ("/v1/jobs/{job_id}/result", "get", "job_id"),
        ("/v1/jobs/{job_id}", "delete", "job_id"),
    ],
    ("/v1/training-runs", "post", "202"): [
        ("/v1/training-runs/{run_id}", "get", "run_id"),
        ("/v1/training-runs/{run_id}/samples", "get", "run_id"),
        ("/v1/training-runs/{run_id}", "delete", "run_id"),
    ],
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def document(app: FastAPI, keys: ClientKeys) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            complete(spec, keys.enabled)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(spec: dict[str, Any], client_keys: bool) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    schemas["UpscaleForm"] = upscale_form_schema()  # the upload route reads its form itself (app/routes/upscale.py)
    if client_keys:
        spec["components"].setdefault("securitySchemes", {})["ClientKey"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "a client key of this gateway (SRGAN_API_KEYS / SRGAN_API_KEYS_FILE)",
        }
    _link(spec)
    for path, operations in spec["paths"].items():
        for op in operations.values():
            _complete_operation(path, op, client_keys)
            form = op.get("requestBody", {}).get("content", {}).get("multipart/form-data", {}).get("schema", {})
            if "$ref" in form:  # a multipart field cannot carry a JSON null either: left out, it is None
                for field in schemas[form["$ref"].rsplit("/", 1)[1]].get("properties", {}).values():
                    _no_null(field)


def _link(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    for (path, method, status), targets in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target, target_method, param in targets:
            op = paths.get(target, {}).get(target_method)
            if op is not None:
                links[op["operationId"]] = {
                    "operationId": op["operationId"],
                    "parameters": {param: "$response.body#/id"},
                    "description": f"{target_method.upper()} {target} of the resource just created",
                }


def _no_null(schema: dict[str, Any]) -> None:
    """Drop ``null`` from an optional query, path, header or form field's schema: on the wire such a field is
    text or absent, never null (FastAPI documents ``X | None`` as ``anyOf [X, null]``)."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del schema["anyOf"]
        if len(rest) == 1:
            schema.update(rest[0])
        else:
            schema["anyOf"] = rest


def _complete_operation(path: str, op: dict[str, Any], client_keys: bool) -> None:
    statuses = {500}
    if path not in _NO_REDIS:
        statuses.add(503)
    body = op.get("requestBody", {}).get("content", {})
    if op.get("parameters") or body:
        statuses.add(422)
    if body:
        statuses |= {400, 413, 415}
    for param in op.get("parameters", []):
        _no_null(param.get("schema", {}))
    if client_keys and needs_client_key(path):
        statuses.add(401)
        op["security"] = [{"ClientKey": []}]
    responses = op.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(str(status), {})
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            if not response.get("description") or response["description"] == "Validation Error":
                response["description"] = DESCRIPTIONS.get(int(status), "error")
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
    op["responses"] = dict(sorted(responses.items()))
