"""Model lookup by name, used by every caller (CLI, worker, training evaluation, gateway).

A served model is a name (``srresnet``, ``srgan``, ``espcn``, ``srcnn``, ``bicubic``, ``bilinear``,
``nearest``) and a scale. Learned models have versions (``model/registry.py``): version 1 is
``NAME_xSCALE.safetensors`` (with its card) in one of the weights folders, ``$SRGAN_WEIGHTS_DIR`` (a path list)
first, then the weights shipped in ``model/weights``; later versions are registered in the models directory.
``load_model(name, scale)`` loads the *active* version (or a pinned one), so the command line and the workers
run the same weights; an explicit ``path`` (or ``dirs``) bypasses the registry. A learned model without
weights is reported as such, never run with random weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from model.archs import Interpolation
from model.weights import ModelCard, WeightsError, build_arch, load_weights

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

SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class UnknownModelError(KeyError):
    """No model of that name (or not at that scale)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NoWeightsError(LookupError):
    """The architecture exists but no weights were found for it."""


@dataclass(frozen=True)
class ModelSpec:
    """A servable model: its architecture and what the engine needs to know to tile it."""

    name: str
    arch: str
    scales: tuple[int, ...]
    description: str
    arch_params: dict[str, Any] = field(default_factory=dict)
    weightless: bool = False
    # Tile overlap in LR pixels that makes tiled output match whole-image output (receptive-field budget).
    overlap: int = 16


SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("srresnet", "srresnet", (2, 4), "SRResNet trained with pixel loss: highest PSNR", overlap=16),
        ModelSpec(
            "srgan",
            "srresnet",
            (2, 4),
            "SRGAN generator trained with perceptual + adversarial loss: sharpest textures",
            overlap=24,
        ),
        ModelSpec("espcn", "espcn", (2, 3, 4), "ESPCN: small and fast sub-pixel network", overlap=6),
        ModelSpec("srcnn", "srcnn", (2, 3, 4), "SRCNN 9-1-5 on a bicubic upscale", overlap=8),
        ModelSpec(
            "bicubic",
            "interpolation",
            (2, 3, 4, 8),
            "MATLAB-compatible bicubic interpolation (baseline)",
            {"mode": "bicubic"},
            weightless=True,
            overlap=4,
        ),
        ModelSpec(
            "bilinear",
            "interpolation",
            (2, 3, 4, 8),
            "bilinear interpolation (antialiased imresize)",
            {"mode": "bilinear"},
            weightless=True,
            overlap=2,
        ),
        ModelSpec(
            "nearest",
            "interpolation",
            (2, 3, 4, 8),
            "pixel replication",
            {"mode": "nearest"},
            weightless=True,
            overlap=0,
        ),
    ]
}


@dataclass
class LoadedModel:
    """A model ready for the engine: the network (training form, eval mode) and where it came from."""

    name: str
    scale: int
    module: nn.Module
    spec: ModelSpec
    card: ModelCard | None = None
    path: Path | None = None
    version_number: int | None = None  # the registry's version (None: weightless, or loaded from a path)

    @property
    def version(self) -> str:
        """What exactly computes the output: the weights' sha256, or 'builtin' for interpolation."""
        return self.card.sha256 if self.card else "builtin"


def weights_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("SRGAN_WEIGHTS_DIR", "").split(os.pathsep) if p]
    return extra + [SHIPPED_WEIGHTS_DIR]


def find_weights(name: str, scale: int, dirs: list[Path] | None = None) -> Path | None:
    for d in dirs if dirs is not None else weights_dirs():
        p = d / f"{name}_x{scale}.safetensors"
        if p.exists():
            return p
    return None


def _spec(name: str, scale: int) -> ModelSpec:
    spec = SPECS.get(name)
    if spec is None:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(SPECS)}")
    if scale not in spec.scales:
        raise UnknownModelError(
            f"model {name!r} does not support scale {scale}; supported: {', '.join(map(str, spec.scales))}"
        )
    return spec


def load_model(
    name: str,
    scale: int = 4,
    *,
    path: str | Path | None = None,
    dirs: list[Path] | None = None,
    version: int | str | None = None,
    registry=None,
) -> LoadedModel:
    """Look a model up by name and scale and load it.

    Weights come from ``path`` if given, else from the first of ``dirs`` that has them, else from the registry
    (``registry``, default ``model.registry.default_registry()``): ``version`` (a number or a sha256 prefix)
    when given, otherwise the active version.
    """
    spec = _spec(name, scale)
    if spec.weightless:
        if version not in (None, ""):
            raise UnknownModelError(f"model {name!r} is an interpolation without weights: it has no versions")
        return LoadedModel(name, scale, Interpolation(scale=scale, **spec.arch_params).eval(), spec)
    if path is None and dirs is None:
        from model.registry import default_registry

        return (registry or default_registry()).load(name, scale, version)
    wpath = Path(path) if path else find_weights(name, scale, dirs)
    if wpath is None:
        where = ", ".join(str(d) for d in (dirs if dirs is not None else weights_dirs()))
        raise NoWeightsError(f"model {name!r} x{scale} has no weights: no {name}_x{scale}.safetensors in {where}")
    module, card = load_weights(wpath)
    if card.arch != spec.arch or int(card.scale) != scale:
        raise WeightsError(f"{wpath.name}: card says {card.arch} x{card.scale}, expected {spec.arch} x{scale}")
    return LoadedModel(name, scale, module, spec, card, wpath)


def list_models(dirs: list[Path] | None = None) -> list[dict[str, Any]]:
    """Every (model, scale) that can be asked for, with whether it has weights (the active version's, unless
    ``dirs`` names the folders to look in)."""
    if dirs is None:
        from model.registry import default_registry

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

    spec = _spec(name, scale)
    torch.manual_seed(seed)
    params = {**spec.arch_params, "scale": scale}
    return LoadedModel(name, scale, build_arch(spec.arch, params).eval(), spec)
