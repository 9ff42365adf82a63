"""How the engine cuts images: tile windows along an axis, and the tile size and overlap each network wants."""

from __future__ import annotations

import itertools
import math

import torch.nn as nn

from model.archs import ESPCN, Interpolation

__all__ = ["tile_windows", "default_tile", "receptive_radius"]


def receptive_radius(net: nn.Module) -> int:
    """How many input pixels on each side can reach an output pixel, where the network says so exactly
    (a large number otherwise: the model spec's overlap budget then decides)."""
    if isinstance(net, ESPCN):  # three "same" convs on the input grid, then a shuffle
        return sum(int(c.padding[0]) for c in (net.conv1, net.conv2, net.conv3))
    return 1 << 30


def default_tile(net: nn.Module, cuda: bool) -> int:
    """Tile core size in input pixels. Networks that compute on the input grid with a few pixels of context
    (ESPCN, interpolation) get large tiles: their per-call cost and the overlap weigh more than cache misses
    (ESPCN on 2 cores: 1.7 output MP/s for 96-px inputs, 4.3 for 256, 5.8 for 384, loaded machine). The
    rest keep the sizes measured fastest for SRResNet (96-192 on CPU); SRCNN runs on the upscaled grid,
    where a large tile would hold 64 channels of output size in memory."""
    if isinstance(net, ESPCN | Interpolation):
        return 512 if cuda else 256
    return 256 if cuda else 128


def tile_windows(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split an axis of length ``n`` into cores of at most ``tile`` and equal windows around them.

    Returns (core_start, core_end, window_start, window_end) per tile. All windows have length
    ``min(n, tile + 2 * overlap)`` and lie inside [0, n); each core has at least ``overlap`` pixels of context
    on every side that is not the image border.
    """
    if tile <= 0 or n <= tile:
        return [(0, n, 0, n)]
    k = math.ceil(n / tile)
    bounds = [round(i * n / k) for i in range(k + 1)]
    win = min(n, tile + 2 * overlap)
    out = []
    for a, b in itertools.pairwise(bounds):
        start = min(max(a - (win - (b - a)) // 2, 0), n - win)
        out.append((a, b, start, start + win))
    return out
