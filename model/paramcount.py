"""How many parameters a served architecture has, from its constructor arguments, without building it.

The model-card check refuses a card whose network would be too large before anything is allocated; the gateway
runs that check when it reads the catalog, and it has no torch (a test checks each formula against the module
built on torch's meta device, for a grid of arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["count_params"]


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _srcnn(scale: int = 4, num_channels: int = 3, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 1,
           f3: int = 5) -> int:  # fmt: skip
    return _conv(num_channels, n1, f1) + _conv(n1, n2, f2) + _conv(n2, num_channels, f3)


def _espcn(scale: int = 4, num_channels: int = 3, n1: int = 64, n2: int = 32, f1: int = 5, f2: int = 3,
           f3: int = 3) -> int:  # fmt: skip
    return _conv(num_channels, n1, f1) + _conv(n1, n2, f2) + _conv(n2, num_channels * scale * scale, f3)


def _srresnet(scale: int = 4, num_channels: int = 3, num_feat: int = 64, num_blocks: int = 16) -> int:
    f = num_feat
    bn, prelu = 2 * f, 1  # batch norm: weight and bias (its running statistics are buffers, not parameters)
    block = 2 * (_conv(f, f, 3, bias=False) + bn) + prelu
    upsample = _conv(f, 4 * f, 3) + prelu
    stages = {2: 1, 4: 2}[scale]
    head = _conv(num_channels, f, 9) + prelu
    return head + num_blocks * block + _conv(f, f, 3, bias=False) + bn + stages * upsample + _conv(f, num_channels, 9)


_COUNTS: dict[str, Callable[..., int]] = {"srcnn": _srcnn, "espcn": _espcn, "srresnet": _srresnet}


def count_params(arch: str, params: dict[str, Any]) -> int:
    """Parameters of ``model.archs.ARCHS[arch](**params)`` (for the architectures a card may name)."""
    return _COUNTS[arch](**params)
