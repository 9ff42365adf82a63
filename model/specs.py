"""What can be served: the model specs (architecture, scales, tile overlap), where version 1's weights are
looked for, and loading one weights file into a :class:`LoadedModel`.

The lowest layer of model lookup: ``model/registry.py`` (versions) and ``model/zoo.py`` (lookup by name through
the registry) build on it, and it imports neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.weights import ModelCard, WeightsError, load_weights

if TYPE_CHECKING:  # the specs are read without torch (the gateway); loading a model imports it
    import torch.nn as nn

__all__ = [
    "ModelSpec",
    "LoadedModel",
    "SPECS",
    "UnknownModelError",
    "NoWeightsError",
    "spec_of",
    "parse_series",
    "series_id",
    "weights_dirs",
    "find_weights",
    "load_file",
    "load_weightless",
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


def spec_of(name: str, scale: int) -> ModelSpec:
    """The spec of ``name`` x``scale``; :class:`UnknownModelError` naming the valid choices otherwise."""
    spec = SPECS.get(name)
    if spec is None:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(SPECS)}")
    if scale not in spec.scales:
        raise UnknownModelError(
            f"model {name!r} does not support scale {scale}; supported: {', '.join(map(str, spec.scales))}"
        )
    return spec


def parse_series(spec: str, default_scale: int | None = None) -> tuple[str, int | None]:
    """``NAME_xSCALE`` (as weights files and registry series are named) or ``NAME`` -> (name, scale); a bare
    name gets ``default_scale``."""
    name, sep, scale = spec.rpartition("_x")
    if sep and scale.isdigit() and name:
        return name, int(scale)
    return spec, default_scale


def series_id(name: str, scale: int) -> str:
    """The inverse of :func:`parse_series`: ``espcn_x4``."""
    return f"{name}_x{int(scale)}"


def load_file(name: str, scale: int, path: str | Path) -> LoadedModel:
    """Load one weights file (and its card) as model ``name`` x``scale``; the card must agree."""
    spec = spec_of(name, scale)
    wpath = Path(path)
    module, card = load_weights(wpath)
    if card.arch != spec.arch or int(card.scale) != scale:
        raise WeightsError(f"{wpath.name}: card says {card.arch} x{card.scale}, expected {spec.arch} x{scale}")
    return LoadedModel(name, scale, module, spec, card, wpath)


def load_weightless(name: str, scale: int) -> LoadedModel:
    """An interpolation baseline (``bicubic``, ``bilinear``, ``nearest``): nothing to load, no versions."""
    spec = spec_of(name, scale)
    if not spec.weightless:
        raise UnknownModelError(f"model {name!r} is a learned model, not an interpolation")
    from model.archs import Interpolation

    return LoadedModel(name, scale, Interpolation(scale=scale, **spec.arch_params).eval(), spec)
