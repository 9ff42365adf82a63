"""Inference forms of the networks: the same function as the training form, computed faster.

For SRResNet (and so the SRGAN generator), measured on the 2-core machine (see PERFORMANCE.md):
- batch norm is folded into the preceding conv;
- PReLU (one shared slope) commutes with the pixel shuffle, so it runs before it on the smaller tensor;
- the last pixel shuffle followed by the 9x9 64->3 conv equals one 5x5 conv on the x2 grid with
  256 -> 12 channels followed by a shuffle of a 12-channel tensor, so no 64-channel tensor ever exists at
  full output resolution (38 % of the compute and most of the memory traffic lived there).
``tests/test_fused.py`` checks equality against the training form.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.archs import ResidualBlock, SRResNet, UpsampleBlock

__all__ = ["inference_form", "fold_bn", "shuffle_then_conv_as_conv"]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    std = torch.sqrt(var + bn.eps)
    gain = bn.weight / std
    kh, kw = conv.kernel_size[0], conv.kernel_size[-1]
    padding = conv.padding if isinstance(conv.padding, str) else (conv.padding[0], conv.padding[-1])
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        (kh, kw),
        stride=(conv.stride[0], conv.stride[-1]),
        padding=padding,
        bias=True,
    )
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * gain[:, None, None, None])
        _bias(fused).copy_((bias - mean) * gain + bn.bias)
    return fused


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        raise ValueError("the conv has no bias")
    return conv.bias


def shuffle_then_conv_as_conv(conv: nn.Conv2d, r: int = 2) -> nn.Conv2d:
    """A conv on the low-resolution grid, to be followed by ``PixelShuffle(r)``, equal to
    ``conv(PixelShuffle(r)(v))``.

    An output pixel (r*i + a', r*j + b') of the original conv reads high-resolution pixels
    r*(i + m) + a for offsets spanning the kernel; regrouping by (m, a) gives a kernel over the low grid whose
    input channels are the pre-shuffle channels c*r*r + a*r + b and whose outputs are o*r*r + a'*r + b'.
    """
    k = conv.kernel_size[0]
    p = conv.padding[0]
    if conv.kernel_size[0] != conv.kernel_size[1] or p != k // 2 or conv.stride != (1, 1) or k % 2 == 0:
        raise ValueError("only odd square 'same' convs with stride 1 can be moved before the shuffle")
    reach = (p + r - 1) // r  # low-grid reach of the kernel on each side
    kl = 2 * reach + 1
    w = conv.weight.detach()
    out_ch, in_ch = w.shape[:2]
    new_w = torch.zeros(out_ch * r * r, in_ch * r * r, kl, kl, dtype=w.dtype)
    for a_out in range(r):
        for b_out in range(r):
            for a in range(r):
                for b in range(r):
                    for m in range(-reach, reach + 1):
                        dy = r * m + a - a_out
                        if not -p <= dy <= p:
                            continue
                        for n in range(-reach, reach + 1):
                            dx = r * n + b - b_out
                            if not -p <= dx <= p:
                                continue
                            new_w[a_out * r + b_out :: r * r, a * r + b :: r * r, m + reach, n + reach] = w[
                                :, :, dy + p, dx + p
                            ]
    fused = nn.Conv2d(in_ch * r * r, out_ch * r * r, kl, padding=reach, bias=conv.bias is not None)
    with torch.no_grad():
        fused.weight.copy_(new_w)
        if conv.bias is not None:
            _bias(fused).copy_(conv.bias.detach().repeat_interleave(r * r))
    return fused


class _PReLU1(nn.Module):
    """PReLU with one shared slope whose weight follows the input's dtype (autocast leaves PReLU alone)."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        if prelu.weight.numel() != 1:
            raise ValueError("only a shared-slope PReLU commutes with the pixel shuffle")
        self.slope: torch.Tensor
        self.register_buffer("slope", prelu.weight.detach().clone().reshape(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.slope.to(x.dtype).reshape(1))


class _FusedBlock(nn.Module):
    """A residual block with its batch norms folded: ``x + conv2(act(conv1(x)))``."""

    def __init__(self, blk: ResidualBlock):
        super().__init__()
        self.conv1 = fold_bn(blk.conv1, blk.bn1)
        self.act = _PReLU1(blk.act)
        self.conv2 = fold_bn(blk.conv2, blk.bn2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class FusedSRResNet(nn.Module):
    """SRResNet for inference only; build it with :func:`inference_form`."""

    def __init__(self, net: SRResNet):
        super().__init__()
        net = copy.deepcopy(net).eval().float()
        self.scale = net.scale
        self.head = net.head
        self.head_act = _PReLU1(net.head_act)
        self.blocks = nn.Sequential(*(_FusedBlock(cast(ResidualBlock, blk)) for blk in net.body))
        self.body_conv = fold_bn(net.body_conv, net.body_bn)
        ups = [cast(UpsampleBlock, u) for u in net.upsample]
        self.up_convs = nn.ModuleList(u.conv for u in ups)
        self.up_acts = nn.ModuleList(_PReLU1(u.act) for u in ups)
        self.tail = shuffle_then_conv_as_conv(net.tail, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head_act(self.head(x))
        y = feat + self.body_conv(self.blocks(feat))
        last = len(self.up_convs) - 1
        for i, (conv, act) in enumerate(zip(self.up_convs, self.up_acts, strict=True)):
            y = act(conv(y))
            if i < last:
                y = F.pixel_shuffle(y, 2)
        return F.pixel_shuffle(self.tail(y), 2)


def inference_form(net: nn.Module) -> nn.Module:
    """The fastest exact equivalent of ``net`` for inference (``net`` itself when there is none)."""
    if isinstance(net, SRResNet):
        return FusedSRResNet(net).eval()
    return net.eval()
