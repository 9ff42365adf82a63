"""Model lookup by name, used by every caller (CLI, worker, training evaluation, gateway).

A served model is a name (``srresnet``, ``srgan``, ``espcn``, ``srcnn``, ``bicubic``, ``bilinear``,
``nearest``) and a scale (``model/specs.py``). Learned models have versions (``model/registry.py``): version 1
is ``NAME_xSCALE.safetensors`` (with its card) in one of the weights folders, ``$SRGAN_WEIGHTS_DIR`` (a path
list) first, then the weights shipped in ``model/weights``; later versions are registered in the models
directory. ``load_model(name, scale)`` loads the *active* version (or a pinned one), so the command line and the
workers run the same weights; an explicit ``path`` (or ``dirs``) bypasses the registry. A learned model without
weights is reported as such, never run with random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.registry import Registry, default_registry
from model.specs import (
    SHIPPED_WEIGHTS_DIR,
    SPECS,
    LoadedModel,
    ModelSpec,
    NoWeightsError,
    UnknownModelError,
    find_weights,
    load_file,
    load_weightless,
    spec_of,
    weights_dirs,
)
from model.weights import build_arch

__all__ = [
    "ModelSpec",
    "LoadedModel",
    "SPECS",
    "UnknownModelError",
    "NoWeightsError",
    "load_model",
    "list_models",
    "weights_dirs",
    "find_weights",
    "SHIPPED_WEIGHTS_DIR",
]


def load_model(
    name: str,
    scale: int = 4,
    *,
    path: str | Path | None = None,
    dirs: list[Path] | None = None,
    version: int | str | None = None,
    registry: Registry | None = None,
) -> LoadedModel:
    """Look a model up by name and scale and load it.

    Weights come from ``path`` if given, else from the first of ``dirs`` that has them, else from the registry
    (``registry``, default ``model.registry.default_registry()``): ``version`` (a number or a sha256 prefix)
    when given, otherwise the active version.
    """
    spec = spec_of(name, scale)
    if spec.weightless:
        if version not in (None, ""):
            raise UnknownModelError(f"model {name!r} is an interpolation without weights: it has no versions")
        return load_weightless(name, scale)
    if path is None and dirs is None:
        return (registry or default_registry()).load(name, scale, version)
    wpath = Path(path) if path else find_weights(name, scale, dirs)
    if wpath is None:
        where = ", ".join(str(d) for d in (dirs if dirs is not None else weights_dirs()))
        raise NoWeightsError(f"model {name!r} x{scale} has no weights: no {name}_x{scale}.safetensors in {where}")
    return load_file(name, scale, wpath)


def list_models(dirs: list[Path] | None = None) -> list[dict[str, Any]]:
    """Every (model, scale) that can be asked for, with whether it has weights (the active version's, unless
    ``dirs`` names the folders to look in)."""
    if dirs is None:
        return default_registry().catalog()
    rows = []
    for spec in SPECS.values():
        for scale in spec.scales:
            path = None if spec.weightless else find_weights(spec.name, scale, dirs)
            rows.append(
                {
                    "name": spec.name,
                    "scale": scale,
                    "arch": spec.arch,
                    "description": spec.description,
                    "has_weights": spec.weightless or path is not None,
                    "weightless": spec.weightless,
                    "path": str(path) if path else None,
                }
            )
    return rows


def random_model(name: str, scale: int = 4, seed: int = 0) -> LoadedModel:
    """An untrained instance, for tests and benchmarks of speed only (never served)."""
    import torch

    spec = spec_of(name, scale)
    torch.manual_seed(seed)
    params = {**spec.arch_params, "scale": scale}
    return LoadedModel(name, scale, build_arch(spec.arch, params).eval(), spec)
