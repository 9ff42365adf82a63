"""The model card's schema: what a card (the JSON beside a ``.safetensors`` file) may hold, with bounds.

A card comes from an admin's upload as often as from our own trainer, so it is read like any other upload:
:func:`parse_card` takes its bytes, refuses more than :data:`MAX_CARD_BYTES` or nesting deeper than
:data:`MAX_DEPTH` before the JSON parser sees it, then :func:`validate_card` checks every value: finite numbers,
bounded strings and sizes, a known architecture with positive hyper-parameters (kernels odd, widths and depths
bounded, and at most :data:`MAX_PARAMS` parameters in all, counted on the ``meta`` device, so no memory is
spent) and the card's scale agreeing with its architecture's. Each refusal is a :class:`CardError` naming
the field (``arch_params.num_feat``). :meth:`model.weights.ModelCard.from_dict` validates every card it reads.

Free-form parts (``recipe``, ``data``, ``metrics`` and fields this version does not know) may hold any JSON
within the same bounds.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError

__all__ = [
    "CardError",
    "CARD_FORMAT",
    "read_json",
    "parse_card",
    "validate_card",
    "ARCH_PARAMS",
    "MAX_CARD_BYTES",
    "MAX_DEPTH",
    "MAX_PARAMS",
]

CARD_FORMAT: Final = "srgan-service/model-card/1"
MAX_CARD_BYTES = 1_000_000
MAX_DEPTH = 64  # a fine-tuned card nests its ancestors' recipes: one level per generation
MAX_NODES = 100_000
MAX_STRING = 100_000
MAX_KEY = 200
MAX_INT = 2**63
MAX_PARAMS = 50_000_000  # SRResNet x4 has 1.5 M


class CardError(ValueError):
    """A model card that is not valid; ``field`` names where (dotted path, ``[i]`` for list items)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


# -- the schema -------------------------------------------------------------------------------------------------


def _odd(v: int) -> int:
    if v % 2 == 0:
        raise ValueError("a kernel size must be odd (the convolutions pad by size // 2)")
    return v


Scale = Annotated[int, Strict(), Field(ge=1, le=8)]
Width = Annotated[int, Strict(), Field(ge=1, le=1024)]
Kernel = Annotated[int, Strict(), Field(ge=1, le=15), AfterValidator(_odd)]
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-1e6, le=1e6)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: int = 4  # each architecture narrows it to the scales it has


class SRCNNParams(_Params):
    scale: Scale = 4
    num_channels: Literal[3] = 3
    n1: Width = 64
    n2: Width = 32
    f1: Kernel = 9
    f2: Kernel = 1
    f3: Kernel = 5


class ESPCNParams(_Params):
    scale: Scale = 4
    num_channels: Literal[3] = 3
    n1: Width = 64
    n2: Width = 32
    f1: Kernel = 5
    f2: Kernel = 3
    f3: Kernel = 3


class SRResNetParams(_Params):
    scale: Literal[2, 4] = 4
    num_channels: Literal[3] = 3
    num_feat: Annotated[int, Strict(), Field(ge=1, le=256)] = 64
    num_blocks: Annotated[int, Strict(), Field(ge=1, le=64)] = 16


# Architectures a card may name (model.archs.ARCHS minus the weightless interpolation and the discriminator,
# which are never served from a card) and their constructor arguments.
ARCH_PARAMS: dict[str, type[_Params]] = {"srcnn": SRCNNParams, "espcn": ESPCNParams, "srresnet": SRResNetParams}


def _range(v: tuple[float, float]) -> tuple[float, float]:
    if not v[0] < v[1]:
        raise ValueError(f"the low end ({v[0]}) must be below the high end ({v[1]})")
    return v


class CardSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Strict(), Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    arch: Literal["srcnn", "espcn", "srresnet"]
    scale: Scale
    arch_params: dict[str, Any] = {}
    input_range: Annotated[tuple[Finite, Finite], AfterValidator(_range)] = (0.0, 1.0)
    output_range: Annotated[tuple[Finite, Finite], AfterValidator(_range)] = (0.0, 1.0)
    color: Literal["RGB"] = "RGB"
    recipe: dict[str, Any] = {}
    data: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    notes: Annotated[str, Strict(), Field(max_length=20_000)] = ""
    num_params: Annotated[int, Strict(), Field(ge=0, le=MAX_PARAMS)] = 0
    sha256: Annotated[str, Strict(), Field(pattern=r"^([0-9a-f]{64})?$")] = ""
    created: Annotated[str, Strict(), Field(max_length=64)] = ""
    format: Literal["srgan-service/model-card/1"] = CARD_FORMAT  # the literal is CARD_FORMAT


# -- reading ----------------------------------------------------------------------------------------------------

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"\s*(:?)|[\[\]{}]')


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, naming where, without recursion (before ``json.loads``)."""
    path: list[str] = []
    key = None
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == '"':
            if m.group(1):  # "name": a key
                key = tok[1 : tok.rindex('"')]
            continue
        if tok in "[{":
            path.append(key if key is not None else "[]")
            key = None
            if len(path) > MAX_DEPTH:
                where = "".join(p if p == "[]" else f".{p}" for p in path[1:9]).lstrip(".")
                raise CardError(where + (" ..." if len(path) > 9 else ""), f"nested deeper than {MAX_DEPTH} levels")
        elif path:
            path.pop()
            key = None


def read_json(raw: bytes | str) -> Any:
    """A card's bytes (or text) parsed as JSON, within the size and depth bounds, or :class:`CardError`."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardError("", f"the model card is larger than {MAX_CARD_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as e:
        raise CardError("", f"the model card is not UTF-8: {e}") from None
    _check_depth(text)
    try:
        return json.loads(text)
    except ValueError as e:
        raise CardError("", f"the model card is not valid JSON: {e}") from None


def parse_card(raw: bytes | str) -> dict[str, Any]:
    """A card's bytes (or text) -> its validated dict, or :class:`CardError`."""
    data = read_json(raw)
    validate_card(data)
    return data


def _where(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _check_json(value: Any, where: str, budget: list[int], depth: int = 0) -> None:
    """Bounds on any JSON value: depth, node count, string and key lengths, finite numbers of sane size."""
    budget[0] -= 1
    if budget[0] < 0:
        raise CardError(where, f"the card holds more than {MAX_NODES:,} values")
    if depth > MAX_DEPTH:
        raise CardError(where, f"the card nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CardError(where, f"{value} is not a finite number (JSON numbers must be; 1e400 overflows)")
    elif isinstance(value, int):
        if abs(value) >= MAX_INT:
            raise CardError(where, f"the integer {value:.3e} is out of range (|n| < 2**63)")
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise CardError(where, f"a string of {len(value):,} characters (at most {MAX_STRING:,})")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", budget, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if len(k) > MAX_KEY:
                raise CardError(where, f"a key of {len(k):,} characters (at most {MAX_KEY})")
            _check_json(v, f"{where}.{k}" if where else k, budget, depth + 1)
    else:
        raise CardError(where, f"{type(value).__name__} is not a JSON value")


def _pydantic(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = _where(((prefix,) if prefix else ()) + tuple(err["loc"]))
        shown = "" if err["type"] == "missing" else f" (got {json.dumps(err.get('input'), default=str)[:80]})"
        raise CardError(where, f"{err['msg']}{shown}") from None


M = TypeVar("M", bound=BaseModel)


def validate_card(data: Any) -> CardSchema:
    """Check a parsed card; returns the schema's view of it (or raises :class:`CardError`)."""
    if not isinstance(data, dict):
        raise CardError("", "the model card is not a JSON object")
    _check_json(data, "", [MAX_NODES])
    missing = [k for k in ("name", "arch", "scale") if k not in data]
    if missing:
        raise CardError(", ".join(missing), "required field(s) missing")
    if isinstance(data["arch"], str) and data["arch"] not in ARCH_PARAMS:
        from model.archs import ARCHS

        if data["arch"] in ARCHS:
            raise CardError("arch", f"{data['arch']!r} is never served from a card; one of {', '.join(ARCH_PARAMS)}")
        raise CardError("arch", f"unknown architecture {data['arch']!r}; known: {', '.join(sorted(ARCHS))}")
    card = _pydantic(CardSchema, data)
    params = _pydantic(ARCH_PARAMS[card.arch], card.arch_params, "arch_params")
    if params.scale != card.scale:
        raise CardError("arch_params.scale", f"{params.scale} disagrees with the card's scale {card.scale}")
    count = _count_params(card.arch, params.model_dump())
    if count > MAX_PARAMS:
        raise CardError("arch_params", f"the network would have {count:,} parameters (at most {MAX_PARAMS:,})")
    return card


def _count_params(arch: str, params: dict[str, Any]) -> int:
    from model.paramcount import count_params  # a formula per architecture: no torch (the gateway reads cards)

    return count_params(arch, params)
