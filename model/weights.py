"""Weights as safetensors files beside a JSON model card; loading never unpickles anything.

A weights file ``NAME.safetensors`` has its card in ``NAME.json``. The card says what the tensors are (the
architecture and its hyper-parameters, the scale, value ranges) and where they came from (recipe, data,
metrics). Loading checks the card against the file (sha256, architecture, every tensor name and shape) and
fails with :class:`WeightsError` naming the mismatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.card import CARD_FORMAT, CardError, read_json, validate_card
from model.clock import iso_now

if TYPE_CHECKING:  # torch is imported where tensors are built: reading cards and hashing files need none of it
    import torch
    import torch.nn as nn

__all__ = [
    "ModelCard",
    "WeightsError",
    "save_weights",
    "load_card",
    "load_weights",
    "build_arch",
    "sha256_file",
    "CARD_FORMAT",
]

# Prefixes that wrappers add to parameter names (DDP, torch.compile); stripped on save and load.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class WeightsError(ValueError):
    """A weights file or its model card is missing, corrupt, or does not match its architecture."""


@dataclass
class ModelCard:
    """What a weights file holds and how it was made. Serialised as JSON beside the weights."""

    name: str
    arch: str
    scale: int
    arch_params: dict[str, Any] = field(default_factory=dict)
    input_range: tuple[float, float] = (0.0, 1.0)
    output_range: tuple[float, float] = (0.0, 1.0)
    color: str = "RGB"
    recipe: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    num_params: int = 0
    sha256: str = ""
    created: str = ""
    format: str = CARD_FORMAT

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["input_range"], d["output_range"] = list(self.input_range), list(self.output_range)
        return json.dumps(d, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """A card from its parsed JSON, checked against the schema (:func:`model.card.validate_card`)."""
        try:
            validate_card(d)
        except CardError as e:
            raise WeightsError(f"invalid model card: {e}") from None
        known = set(cls.__dataclass_fields__)
        card = cls(**{k: v for k, v in d.items() if k in known})
        card.input_range = (float(card.input_range[0]), float(card.input_range[1]))
        card.output_range = (float(card.output_range[0]), float(card.output_range[1]))
        return card


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in _WRAPPER_PREFIXES:
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def build_arch(arch: str, params: dict[str, Any]) -> nn.Module:
    """Build an architecture by its card name, with a clear error for unknown names or parameters."""
    from model.archs import ARCHS

    cls = ARCHS.get(arch)
    if cls is None:
        raise WeightsError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    try:
        return cls(**params)
    except TypeError as e:
        raise WeightsError(f"architecture {arch!r} does not take parameters {params}: {e}") from None


def save_weights(module: nn.Module, path: str | Path, card: ModelCard) -> ModelCard:
    """Write ``path`` (.safetensors) and its card (.json); fills the card's sha256, size and date."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in _strip_prefixes(module.state_dict()).items()}
    # BatchNorm's step counter is training state, not a weight.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(
        state,
        str(tmp),
        metadata={"arch": card.arch, "scale": str(card.scale), "name": card.name, "format": CARD_FORMAT},
    )
    tmp.chmod(0o644)  # safetensors writes 0600; weights are shared with the service's other users
    tmp.replace(path)
    card.sha256 = sha256_file(path)
    card.num_params = sum(v.numel() for v in state.values())
    card.created = card.created or iso_now("seconds")
    path.with_suffix(".json").write_text(card.to_json())
    return card


def load_card(path: str | Path) -> ModelCard:
    """Read the card beside ``path`` (either the .safetensors or the .json)."""
    card_path = Path(path).with_suffix(".json")
    try:
        data = read_json(card_path.read_bytes())
    except FileNotFoundError:
        raise WeightsError(f"model card {card_path} is missing") from None
    except CardError as e:
        raise WeightsError(f"model card {card_path}: {e}") from None
    return ModelCard.from_dict(data)


def load_weights(path: str | Path, *, verify_sha: bool = True) -> tuple[nn.Module, ModelCard]:
    """Build the card's architecture and load the tensors into it strictly. Returns (module in eval mode, card)."""
    path = Path(path).with_suffix(".safetensors")
    card = load_card(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} is missing (its card {path.with_suffix('.json').name} exists)")
    if verify_sha and card.sha256:
        actual = sha256_file(path)
        if actual != card.sha256:
            raise WeightsError(f"{path.name}: sha256 {actual[:12]}... does not match its card ({card.sha256[:12]}...)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise WeightsError(f"{path.name} is not a readable safetensors file: {e}") from None
    if meta.get("arch") and meta["arch"] != card.arch:
        raise WeightsError(f"{path.name} holds arch {meta['arch']!r} but its card says {card.arch!r}")
    if meta.get("scale") and int(meta["scale"]) != int(card.scale):
        raise WeightsError(f"{path.name} holds scale {meta['scale']} but its card says {card.scale}")
    params = dict(card.arch_params)
    if "scale" in params and int(params["scale"]) != int(card.scale):
        raise WeightsError(f"card of {path.name}: scale {card.scale} but arch_params.scale {params['scale']}")
    module = build_arch(card.arch, params)
    state = _strip_prefixes(state)
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")
        raise WeightsError(f"{path.name} does not match architecture {card.arch} {params}: " + "; ".join(parts))
    module.load_state_dict(state, strict=False)  # strictness checked above, ignoring BN step counters
    return module.eval(), card
