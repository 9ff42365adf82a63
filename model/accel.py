"""The engine near the hardware: CUDA graphs, ``torch.compile`` modes and the batch-size calibration.

- :class:`CudaGraphed` records one CUDA graph per input shape (the engine's windows are equal-sized, so a
  worker sees a handful of shapes) and replays it: one launch per batch instead of one per layer, which is
  what small networks (ESPCN, SRCNN) and small batches lose most to.
- :func:`compiled` wraps a network in ``torch.compile`` with a mode (``default``, ``reduce-overhead`` (CUDA
  graphs by Inductor), ``max-autotune``, ``max-autotune-no-cudagraphs``).
- :func:`to_host` brings a batch of network outputs back as uint8 (or float) host tensors, cheaply.
- :func:`calibrate_batch` times the network on the engine's window shape for growing batch sizes and keeps the
  smallest batch within a few percent of the best time per tile (bigger batches only add latency and memory
  once the device is full); :func:`choose_batch` is that rule alone. Results are cached per device, torch
  version, model and settings in a JSON file (``$SRGAN_CACHE_DIR``, else ``~/.cache/srgan``), so a worker
  calibrates once per machine.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn

__all__ = ["CudaGraphed", "compiled", "COMPILE_MODES", "choose_batch", "calibrate_batch", "cache_path", "to_host"]

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BATCH_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)


def compiled(net: nn.Module, mode: str = "default") -> nn.Module:
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    # Static shapes: the engine's windows are equal, and a shape-specialised graph is the fast one.
    return cast(nn.Module, torch.compile(net, mode=mode, dynamic=False))


class CudaGraphed(nn.Module):
    """``net`` replayed from one CUDA graph per input shape, layout and dtype (at most ``max_graphs``; other
    shapes run eagerly). The output tensor is the graph's static buffer: it is valid until the next call, so
    the caller consumes it (the engine converts it to uint8 on the same stream) before calling again."""

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32, max_graphs: int = 8):
        super().__init__()
        self.net, self.dtype, self.max_graphs = net, dtype, max_graphs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool: Any = None

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        # The autocast weight cache must be off while capturing: cached casts would be freed under the graph.
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.dtype != torch.float32, cache_enabled=False):
            return self.net(x)

    def reset(self) -> None:
        """Drop every recorded graph (and the memory they hold)."""
        self._graphs.clear()
        self._pool = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda":
            return self.net(x)
        key = (tuple(x.shape), x.stride(), x.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self._eager(x)
            entry = self._graphs[key] = self._capture(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its algorithms here
            for _ in range(2):
                self._eager(static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self._eager(static_in)
        return graph, static_in, static_out


def choose_batch(per_tile: dict[int, float], tolerance: float = 0.05) -> int:
    """The smallest batch whose seconds per tile is within ``tolerance`` of the best measured."""
    if not per_tile:
        raise ValueError("no batch size was measured")
    best = min(per_tile.values())
    return min(b for b, t in per_tile.items() if t <= best * (1 + tolerance))


def cache_path() -> Path:
    root = os.environ.get("SRGAN_CACHE_DIR") or Path.home() / ".cache" / "srgan"
    return Path(root) / "engine-calibration.json"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{os.cpu_count()}"


def calibrate_batch(
    forward: Callable[[torch.Tensor], object],
    window: tuple[int, int],
    device: torch.device,
    key: str,
    candidates: Sequence[int] = BATCH_CANDIDATES,
    seconds: float = 0.15,
    use_cache: bool = True,
    sync: Callable[[], None] | None = None,
) -> tuple[int, dict[int, float]]:
    """(batch size, seconds per tile by batch size) for ``forward`` on windows of ``window`` (h, w).

    Stops growing at the first out-of-memory, when a batch would hold more than a quarter of the device's free
    memory in inputs and outputs alone, or after two doublings that gained less than 3 %. ``key`` names the
    model and settings; the device name and torch version are added to it for the cache.
    """
    full_key = f"{_device_name(device)}|torch {torch.__version__}|{key}|{window[0]}x{window[1]}"
    path = cache_path()
    cache: dict = {}
    if use_cache:
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        hit = cache.get(full_key)
        if isinstance(hit, dict) and isinstance(hit.get("batch"), int):
            return hit["batch"], {int(k): float(v) for k, v in hit.get("per_tile", {}).items()}
    if sync is None:
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    per_tile: dict[int, float] = {}
    stalls = 0
    for b in candidates:
        x = torch.rand(b, 3, *window, device=device)
        try:
            forward(x)  # warm-up (and a CUDA graph capture or a compile for this shape)
            sync()
            n, start = 0, time.perf_counter()
            while n < 2 or time.perf_counter() - start < seconds:
                forward(x)
                n += 1
            sync()
        except torch.OutOfMemoryError:
            break
        except RuntimeError as e:
            if "out of memory" not in str(e).lower():
                raise
            break
        finally:
            del x
        t = (time.perf_counter() - start) / n / b
        best = min(per_tile.values(), default=None)
        per_tile[b] = t
        stalls = stalls + 1 if best is not None and t > best * 0.97 else 0
        if stalls >= 2 or _too_big(device, b * 2, window):
            break
    if device.type == "cuda":
        torch.cuda.empty_cache()
    batch = choose_batch(per_tile)
    if use_cache:
        cache[full_key] = {"batch": batch, "per_tile": {str(k): v for k, v in per_tile.items()}}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError as e:
            log.warning("could not write the calibration cache %s: %s", path, e)
    log.info("calibrated batch size %d for %s (seconds per tile %s)", batch, full_key, per_tile)
    return batch, per_tile


def _too_big(device: torch.device, batch: int, window: tuple[int, int], out_scale: int = 4) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    px = batch * window[0] * window[1]
    return px * 3 * 4 * (1 + out_scale * out_scale) > free / 4


def to_host(
    y: torch.Tensor, u8: bool = True, f32: bool = False
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.cuda.Event | None]:
    """A batch of network outputs as host tensors: ``(uint8 0..255 or None, float32 0..1 or None, event)``.

    Clamping, scaling and rounding run in place on the device (``y`` is the network's fresh output, or a
    float copy of it), the uint8 conversion too, so only bytes cross to the host. On CPU the conversion to
    uint8 goes through NumPy: torch's float-to-uint8 copy is not vectorised (measured 7.4 ms vs 0.8 ms for a
    batch of four 512² tiles), and its uint8 results are NHWC in memory whatever the batch's layout; the others
    keep the batch's layout (NHWC for channels_last). So pasting rows into the HWC-backed outputs and the
    encoder's HWC view need no transposing copy. On CUDA the copies
    go to pinned memory without blocking; wait on the returned event before reading them.
    """
    cuda = y.device.type == "cuda"
    with torch.inference_mode():  # the network's output is an inference tensor: update it in place in there
        y = y.float().clamp_(0, 1)  # float() of an fp32 tensor is the tensor itself
        f = (y.clone() if u8 else y) if f32 else None
        if u8:
            y.mul_(255).round_()
        q_dev = y.to(torch.uint8) if u8 and cuda else None
    # Host tensors are made outside inference mode: callers may update them in place.
    q = _np_to_uint8(y) if u8 and not cuda else None
    event = None
    if cuda:
        q = _pinned_copy(q_dev) if q_dev is not None else None
        f = _pinned_copy(f) if f is not None else None
        event = torch.cuda.Event()
        event.record()
    elif f is not None:
        f = f.clone()
    return q, f, event


def _np_to_uint8(y: torch.Tensor) -> torch.Tensor:
    """``y`` (N, C, H, W) float holding integers 0..255, as uint8 in NHWC memory (channels_last).

    A channels_last batch (the networks') converts in one straight pass. An NCHW one (interpolation's matmuls
    write NCHW) converts one channel at a time into its strided place in the NHWC result: the encoder's HWC view
    then needs no transposing copy (measured on a 400x396 bicubic output: 0.34 ms for both, against 0.18 ms to
    convert plus 0.95 ms for the encoder's transposing copy).
    """
    nhwc = y.permute(0, 2, 3, 1)  # contiguous for a channels_last batch: a NumPy view, no copy
    if nhwc.is_contiguous():
        return torch.from_numpy(nhwc.numpy().astype(np.uint8)).permute(0, 3, 1, 2)
    src = nhwc.numpy()
    out = np.empty(src.shape, np.uint8)
    for c in range(src.shape[3]):
        np.copyto(out[..., c], src[..., c], casting="unsafe")  # the same conversion as astype
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _pinned_copy(t: torch.Tensor) -> torch.Tensor:
    """A pinned host copy of the device tensor ``t`` in its layout, started without blocking the host."""
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = t.shape
        host = torch.empty((n, h, w, c), dtype=t.dtype, pin_memory=True).permute(0, 3, 1, 2)
    else:
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host
