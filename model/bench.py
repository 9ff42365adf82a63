"""``srgan bench engine``: model-only throughput against the machine's measured roofline.

For every model it times the engine's automatic settings (inference form, channels_last, reduced precision)
and a plain fp32 eager NCHW baseline of the training form on the same input, counts the FLOPs per output
pixel with PyTorch's FLOP counter, and measures the machine's compute peak (a large matmul or a 3x3 conv,
whichever is faster) in the same run, so each figure is also a fraction of the roofline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from model.engine import _DTYPES, EngineConfig, Upscaler
from model.zoo import NoWeightsError, load_model, random_model

__all__ = ["run_bench", "compute_peak", "flops_per_output_pixel"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, seconds: float, min_iters: int = 2) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    _sync(device)
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        fn()
        n += 1
        _sync(device)
    return (time.perf_counter() - start) / n


def compute_peak(device: torch.device, precision: str, seconds: float = 1.0) -> float:
    """The compute roofline for this precision: the better of a large square matmul and a 64-channel 3x3
    convolution (channels_last), in achieved GFLOP/s. Both count, since on some CPUs oneDNN's convolutions
    run well above its sgemm (measured here: fp32 matmul ~100-220 GFLOP/s, 3x3 conv ~300-490)."""
    dtype = _DTYPES[precision]
    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    matmul = 2 * n**3 / _time(lambda: a @ b, device, seconds / 2) / 1e9
    batch, side, ch = (32, 128, 64) if device.type == "cuda" else (4, 96, 64)
    x = torch.randn(batch, ch, side, side, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    conv = nn.Conv2d(ch, ch, 3, padding=1).to(device=device, dtype=dtype).to(memory_format=torch.channels_last)

    def run_conv() -> None:
        with torch.inference_mode():
            conv(x)

    conv_flops = 2 * ch * ch * 9 * batch * side * side
    return max(matmul, conv_flops / _time(run_conv, device, seconds / 2) / 1e9)


def flops_per_output_pixel(net: nn.Module, x: torch.Tensor, scale: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x)
    out_px = x.shape[0] * x.shape[2] * x.shape[3] * scale * scale
    return counter.get_total_flops() / out_px


def _throughput(
    net: nn.Module, x: torch.Tensor, scale: int, precision: str, device: torch.device, seconds: float
) -> float:
    dtype = _DTYPES[precision]

    def run() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            net(x)

    dt = _time(run, device, seconds)
    return x.shape[0] * x.shape[2] * x.shape[3] * scale * scale / dt / 1e6


def run_bench(
    models: list[str],
    scale: int = 4,
    batch: int | None = None,
    tile: int | None = None,
    device: str = "auto",
    seconds: float = 3.0,
    try_compile: bool = False,
    precisions: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    rows: list[dict] = []
    peaks: dict[str, float] = {}
    for name in models:
        try:
            model, weights = load_model(name, scale), "trained"
        except NoWeightsError:
            model, weights = random_model(name, scale), "random (speed does not depend on weights)"
        auto = Upscaler(model, EngineConfig(device=device, tile=tile, batch_size=batch))
        dev, b, t = auto.device, auto.batch_size, auto.tile or 128
        for p in {"fp32", auto.precision, *(precisions or [])}:
            if p not in peaks:
                peaks[p] = compute_peak(dev, p)
                log(f"compute peak {p}: {peaks[p]:.0f} GFLOP/s (best of a large matmul and a 64-channel 3x3 conv)")
        x = torch.rand(b, 3, t, t, device=dev)
        base_net = model.module.to(dev).eval()
        fpp = flops_per_output_pixel(base_net, x[:1], scale)
        fpp_fused = flops_per_output_pixel(auto.net, x[:1], scale) if not try_compile else fpp
        variants: list[tuple[str, nn.Module, torch.Tensor, str, float]] = [
            ("fp32 eager NCHW (baseline)", base_net, x, "fp32", fpp)
        ]
        x_cl = x.contiguous(memory_format=torch.channels_last) if auto.channels_last else x
        wanted = [auto.precision] + [p for p in (precisions or []) if p != auto.precision]
        for p in wanted:
            variants.append(
                (f"engine {p}" + (" channels_last" if auto.channels_last else ""), auto.net, x_cl, p, fpp_fused)
            )
        if try_compile:
            compiled = cast(nn.Module, torch.compile(auto.net))
            variants.append((f"engine {auto.precision} + torch.compile", compiled, x_cl, auto.precision, fpp_fused))
        base_mp = None
        for label, net, inp, p, fpp_v in variants:
            if model.spec.weightless and p != "fp32":
                continue
            start = time.perf_counter()
            mp = _throughput(net, inp, scale, p, dev, seconds)
            base_mp = base_mp or mp
            gflops = mp * 1e6 * fpp_v / 1e9
            fraction = gflops / peaks[p]
            row = {
                "model": name,
                "weights": weights,
                "variant": label,
                "precision": p,
                "batch": b,
                "tile": t,
                "device": str(dev),
                "flops_per_out_px": round(fpp_v),
                "out_mp_per_s": round(mp, 4),
                "gflops_per_s": round(gflops, 2),
                "peak_gflops_per_s": round(peaks[p], 1),
                "roofline_fraction": round(fraction, 4),
                "speedup_vs_fp32_eager": round(mp / base_mp, 3),
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            log(
                f"{name:<9} {label:<36} {mp:8.3f} MP/s  {gflops:8.1f} GFLOP/s  "
                f"{100 * fraction:5.1f}% of {p} peak  x{mp / base_mp:.2f}"
            )
    return rows
