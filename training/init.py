"""ICNR initialisation of sub-pixel convolutions (Aitken et al. 2017, "Checkerboard artifact free sub-pixel
convolution"), one of the causes of the dot lattice a sub-pixel upsampler paints.

A conv feeding ``PixelShuffle(r)`` computes each of the r x r output phases with its own kernel. Initialised
independently, the phases start different, and the network starts from (and a short run may keep) a grid of
period r: an untrained ESPCN's output is almost nothing but that grid (``model.quality.lattice_score``). ICNR
gives the r^2 kernels of each output channel the same initial values, so the shuffled output starts as a
nearest-neighbour upsampling of one convolution: no grid, and training moves the phases apart only as far as
the loss asks.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["icnr_", "sub_pixel_convs", "apply_icnr"]


@torch.no_grad()
def icnr_(conv: nn.Conv2d, scale: int, init=nn.init.kaiming_normal_) -> None:
    """Initialise ``conv`` (out channels C * scale^2, feeding ``PixelShuffle(scale)``) so that every output
    channel's scale^2 phases share one kernel (drawn with ``init``) and one bias."""
    out_ch = conv.out_channels
    r2 = scale * scale
    if out_ch % r2:
        raise ValueError(f"a conv with {out_ch} output channels cannot feed PixelShuffle({scale})")
    base = torch.empty(out_ch // r2, *conv.weight.shape[1:], dtype=conv.weight.dtype, device=conv.weight.device)
    init(base)
    # PixelShuffle takes channel c * r^2 + k to phase k of output channel c: repeat each kernel r^2 times in a row.
    conv.weight.copy_(base.repeat_interleave(r2, dim=0))
    if conv.bias is not None:
        conv.bias.copy_(conv.bias.view(-1, r2)[:, :1].expand(-1, r2).reshape(-1))


def sub_pixel_convs(net: nn.Module) -> list[tuple[nn.Conv2d, int]]:
    """(conv, scale) for each conv that feeds a ``PixelShuffle`` in ``net``: modules that hold a ``shuffle``
    and its conv (``conv`` in SRResNet's upsampling blocks, ``conv3`` in ESPCN)."""
    found = []
    for m in net.modules():
        shuffle = getattr(m, "shuffle", None)
        if isinstance(shuffle, nn.PixelShuffle):
            conv = getattr(m, "conv", None) or getattr(m, "conv3", None)
            if isinstance(conv, nn.Conv2d):
                found.append((conv, shuffle.upscale_factor))
    return found


def apply_icnr(net: nn.Module) -> int:
    """ICNR-initialise every sub-pixel conv of ``net``; returns how many."""
    convs = sub_pixel_convs(net)
    for conv, scale in convs:
        icnr_(conv, scale)
    return len(convs)
