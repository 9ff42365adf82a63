"""The one inference engine shared by the CLI, the worker and training evaluation.

``Upscaler`` cuts every image into overlapping tiles, batches tiles from different images together, runs the
network and stitches the cores of the tiles back. Every tile window of an image has the same size and lies
inside the image (windows at the border are shifted inwards), so image borders see exactly the padding they
would see whole, interior borders see at least ``overlap`` real pixels of context, and equal-sized windows
from many images share one batch. Memory stays bounded by the tile and batch sizes (plus the images).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from model.accel import CudaGraphed, calibrate_batch, compiled, to_host
from model.fused import inference_form
from model.specs import LoadedModel
from model.tiling import default_tile, receptive_radius, tile_windows

__all__ = [
    "EngineConfig",
    "Upscaler",
    "Progress",
    "ImageTooLargeError",
    "resolve_device",
    "resolve_precision",
    "tile_windows",
]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_MIN_TILE = 32


class ImageTooLargeError(RuntimeError):
    """The image does not fit on the device even one small tile at a time."""


@dataclass
class EngineConfig:
    """How the engine runs. ``None``/``"auto"`` picks what is fastest on the device.

    Args:
        device: ``"auto"`` (CUDA when present, else CPU), or any torch device string.
        precision: ``"auto"`` (bf16 on CUDA that supports it, else fp16; bf16 on CPUs with native bf16,
            else fp32), or ``"fp32"``, ``"bf16"``, ``"fp16"``. Weightless models always run in fp32.
        channels_last: NHWC memory layout (default: on).
        tile: tile core size in input pixels; 0 runs every image whole (default: :func:`default_tile`: 128 on
            CPU, 256 on CUDA, the fastest sizes measured for SRResNet; twice that for ESPCN and interpolation).
        overlap: context in input pixels around each tile (default: the network's exact receptive radius
            where it is known, else the model's receptive-field budget).
        batch_size: tiles per forward pass (default: 4 on CPU, 16 on CUDA).
        streams: on CPU, a batch is split among this many forward passes run at once, each on its share of
            torch's threads (default: one single-threaded pass per thread, up to the batch size; 1: one pass
            on all threads). Passes that do not share threads skip OpenMP's barrier after every layer: SRResNet
            on 2 cores computed 10-17% more tiles/s, and a thread pre-empted by other work (the worker's
            encoders, the gateway) no longer holds its partner idle at each barrier.
        compile: wrap the network in ``torch.compile`` (measured: no gain on CPU), in ``compile_mode``
            (``default``, ``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``).
        cuda_graphs: on CUDA, replay each window shape from a recorded CUDA graph (:class:`model.accel.CudaGraphed`;
            ignored with ``compile``, whose ``reduce-overhead`` and ``max-autotune`` modes record their own).
        calibrate: choose ``batch_size`` by timing growing batches at start (cached per machine; see
            :func:`model.accel.calibrate_batch`). Default: on CUDA when ``batch_size`` is not given, except
            with ``compile`` (each batch size tried would be compiled).
    """

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    streams: int | None = None
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False
    calibrate: bool | None = None


class Progress(NamedTuple):
    """Tiles done so far: overall and for the image whose tile just finished."""

    done: int
    total: int
    image: int
    image_done: int
    image_total: int


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


class _Tile(NamedTuple):
    image: int
    rows: tuple[int, int, int, int]
    cols: tuple[int, int, int, int]


class Upscaler:
    """Upscale many images with one model, tiled and batched across images.

    Inputs are (3, H, W) tensors, uint8 (0..255) or float (0..1); each output has the input's kind (uint8 or
    float32) and ``scale`` times its size.
    """

    def __init__(self, model: LoadedModel, config: EngineConfig | None = None, **overrides):
        cfg = config or EngineConfig()
        if overrides:
            cfg = EngineConfig(**{**cfg.__dict__, **overrides})
        self.model = model
        self.scale = model.scale
        self.device = resolve_device(cfg.device)
        self.precision = "fp32" if model.spec.weightless else resolve_precision(cfg.precision, self.device)
        self.channels_last = True if cfg.channels_last is None else cfg.channels_last
        cuda = self.device.type == "cuda"
        self.tile = default_tile(model.module, cuda) if cfg.tile is None else cfg.tile
        self.overlap = min(model.spec.overlap, receptive_radius(model.module)) if cfg.overlap is None else cfg.overlap
        self.batch_size = max(1, (16 if cuda else 4) if cfg.batch_size is None else cfg.batch_size)
        if cuda:  # equal windows: let cuDNN time its algorithms once per shape and keep the fastest
            torch.backends.cudnn.benchmark = True
        net: nn.Module = inference_form(model.module).to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.cuda_graphs = cfg.cuda_graphs and cuda and not cfg.compile
        if cfg.compile:
            net = compiled(net, cfg.compile_mode)
        elif self.cuda_graphs:
            net = CudaGraphed(net, _DTYPES[self.precision])
        self.net = net
        # A compiled module is not called from several threads at once; CUDA runs a batch as one pass.
        self.streams = 1 if cfg.compile or self.device.type != "cpu" else cfg.streams
        self.config = cfg
        self.calibration: dict[int, float] | None = None
        # Not by default with compile: every batch size tried would be another compile (minutes in max-autotune).
        auto_calibrate = cfg.calibrate is None and cuda and not cfg.compile
        if cfg.batch_size is None and self.tile > 0 and (cfg.calibrate or auto_calibrate):
            try:
                self.batch_size, self.calibration = self._calibrate()
            except Exception:  # a failed calibration must not stop a worker: the default batch size works
                log.warning("batch size calibration failed; keeping %d", self.batch_size, exc_info=True)
            if isinstance(self.net, CudaGraphed):
                self.net.reset()  # the graphs of the batch sizes tried hold memory

    def _calibrate(self) -> tuple[int, dict[int, float]]:
        win = self.tile + 2 * self.overlap
        mode = (
            f"compile {self.config.compile_mode}" if self.config.compile else "graphs" if self.cuda_graphs else "eager"
        )
        key = f"{self.model.name} x{self.scale}|{self.precision}|channels_last {self.channels_last}|{mode}"

        def forward(x: torch.Tensor) -> None:
            try:
                self._forward(x)
            except _OutOfMemory:
                raise torch.OutOfMemoryError("out of memory during calibration") from None

        return calibrate_batch(forward, (win, win), self.device, key)

    def describe(self) -> dict:
        return {
            "model": self.model.name,
            "scale": self.scale,
            "version": self.model.version,
            "version_number": self.model.version_number,
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "tile": self.tile,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "streams": self.streams or "auto",
            "compile": self.config.compile_mode if self.config.compile else False,
            "cuda_graphs": self.cuda_graphs,
            "calibrated": self.calibration is not None,
        }

    # -- public API ---------------------------------------------------------------------------------------
    def upscale(
        self, images: Sequence[torch.Tensor], progress: Callable[[Progress], None] | None = None
    ) -> list[torch.Tensor]:
        """Upscale all ``images``; raises the first per-image error."""
        out: list[torch.Tensor | None] = [None] * len(images)
        for i, result in self.upscale_iter(images, progress):
            if isinstance(result, BaseException):
                raise result
            out[i] = result
        return out  # type: ignore[return-value]

    def upscale_iter(
        self, images: Sequence[torch.Tensor], progress: Callable[[Progress], None] | None = None
    ) -> Iterator[tuple[int, torch.Tensor | Exception]]:
        """Yield ``(index, output)`` as each image completes (or ``(index, error)`` for one that cannot be
        processed), so callers can encode finished images while the rest compute."""
        for img in images:
            if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] == 0 or img.shape[2] == 0:
                raise ValueError(f"expected (3, H, W) images with H, W > 0, got shape {tuple(img.shape)}")
        plans = [self._plan(i, img, self.tile) for i, img in enumerate(images)]
        state = _RunState(images, plans, self.scale, progress)
        yield from self._run(state, (t for plan in plans for t in plan))
        # Images whose single tile did not fit: again alone with ever smaller tiles.
        for i in sorted(state.oom_images):
            tile = self.tile if self.tile > 0 else max(images[i].shape[1:])
            while True:
                tile //= 2
                if tile < _MIN_TILE:
                    yield (
                        i,
                        ImageTooLargeError(
                            f"image {tuple(images[i].shape[1:])} does not fit in {self.device} memory even in "
                            f"{_MIN_TILE}-pixel tiles"
                        ),
                    )
                    break
                log.warning("out of memory on image %d; retrying with %d-pixel tiles", i, tile)
                plan = self._plan(i, images[i], tile)
                state.restart(i, plan)
                results = list(self._run(state, plan))
                if results:
                    yield from results
                    break

    # -- internals ------------------------------------------------------------------------------------------
    def _plan(self, index: int, img: torch.Tensor, tile: int) -> list[_Tile]:
        h, w = img.shape[1:]
        return [
            _Tile(index, r, c) for r in tile_windows(h, tile, self.overlap) for c in tile_windows(w, tile, self.overlap)
        ]

    def _run(self, state: _RunState, tiles: Iterable[_Tile]) -> Iterator[tuple[int, torch.Tensor]]:
        # On CUDA a batch's results are stitched after the next batch is launched: the copy back to (pinned)
        # host memory and the pasting overlap the device's work. On CPU nothing is asynchronous: stitch at once.
        defer = self.device.type == "cuda"
        pending: list[_Landing] = []
        for batch in _batches(tiles, self.batch_size):
            launched = list(self._launch(state, batch))
            if not defer:
                pending, launched = launched, []
            for landing in pending:
                yield from self._land(state, landing)
            pending = launched
        for landing in pending:
            yield from self._land(state, landing)

    def _launch(self, state: _RunState, batch: list[_Tile]) -> Iterator[_Landing]:
        """Run one batch through the network and start its way back to the host (splitting it when the device
        is full)."""
        batch = [t for t in batch if t.image not in state.oom_images]
        if not batch:
            return
        x = state.window_batch(batch, self.device, self.channels_last)
        try:
            y = self._forward(x)
        except _OutOfMemory:
            del x
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:  # this image is retried later, alone, with smaller tiles
                state.give_up(batch[0].image)
                return
            log.info("out of memory on a batch of %d tiles; splitting it", len(batch))
            half = len(batch) // 2
            yield from self._launch(state, batch[:half])
            yield from self._launch(state, batch[half:])
            return
        want_u8 = [state.images[t.image].dtype == torch.uint8 for t in batch]
        yield _Landing(batch, *to_host(y, any(want_u8), not all(want_u8)))

    def _land(self, state: _RunState, landing: _Landing) -> Iterator[tuple[int, torch.Tensor]]:
        if landing.ready is not None:
            landing.ready.synchronize()
        s = self.scale
        for k, t in enumerate(landing.tiles):
            if t.image in state.oom_images:
                continue
            out = landing.u8 if state.images[t.image].dtype == torch.uint8 else landing.f32
            assert out is not None
            r0, r1, rw, _ = t.rows
            c0, c1, cw, _ = t.cols
            core = out[k, :, (r0 - rw) * s : (r1 - rw) * s, (c0 - cw) * s : (c1 - cw) * s]
            finished = state.store(t.image, r0 * s, c0 * s, core)
            if finished is not None:
                yield t.image, finished

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()  # read per call: the worker drops to one thread for tiny jobs
        n = min(self.streams or threads, threads, len(x)) if self.device.type == "cpu" else 1
        if n <= 1:
            return self._forward_pass(x)
        futures = [_stream_pool(n).submit(self._forward_pass, part, threads // n) for part in x.tensor_split(n)]
        outs, errors = [], []
        for f in futures:  # every pass ends before an error is raised: a retry must not run beside one
            try:
                outs.append(f.result())
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
        return torch.cat(outs)

    def _forward_pass(self, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """The network's raw output for ``x`` (any dtype, not clamped)."""
        if threads is not None:
            torch.set_num_threads(threads)  # this thread's own OpenMP team size
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = _DTYPES[self.precision]
        try:
            with torch.inference_mode():
                if dtype == torch.float32 and not torch.is_autocast_enabled(self.device.type):
                    return self.net(x)  # what autocast(enabled=False) would run: skip its enter and exit per batch
                with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
                    return self.net(x)
        except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
            if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
                raise _OutOfMemory() from None
            raise


def _batches(tiles: Iterable[_Tile], size: int) -> Iterator[list[_Tile]]:
    """Consecutive tiles in batches of at most ``size`` equal windows."""
    batch: list[_Tile] = []
    for t in tiles:
        if batch and (len(batch) >= size or _window_shape(batch[0]) != _window_shape(t)):
            yield batch
            batch = []
        batch.append(t)
    if batch:
        yield batch


class _Landing(NamedTuple):
    """A launched batch on its way back: host tensors valid once ``ready`` (a CUDA event) has passed."""

    tiles: list[_Tile]
    u8: torch.Tensor | None
    f32: torch.Tensor | None
    ready: torch.cuda.Event | None


_stream_pools: dict[int, ThreadPoolExecutor] = {}
_stream_pools_lock = threading.Lock()


def _stream_pool(n: int) -> ThreadPoolExecutor:
    """``n`` threads for concurrent forward passes, shared by every engine of the process that splits its
    batches ``n`` ways."""
    with _stream_pools_lock:
        pool = _stream_pools.get(n)
        if pool is None:
            pool = _stream_pools[n] = ThreadPoolExecutor(n, thread_name_prefix="srgan-engine-pass")
        return pool


def _window_shape(t: _Tile) -> tuple[int, int]:
    return t.rows[3] - t.rows[2], t.cols[3] - t.cols[2]


class _OutOfMemory(Exception):
    pass


class _RunState:
    """Inputs on the device, output buffers and progress for one ``upscale_iter`` call."""

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        plans: list[list[_Tile]],
        scale: int,
        progress: Callable[[Progress], None] | None,
    ):
        self.images = images
        self.scale = scale
        self.progress = progress
        self.planned = [len(p) for p in plans]
        self.done_per_image = [0] * len(images)
        self.total = sum(self.planned)
        self.done = 0
        self.oom_images: set[int] = set()
        self._outputs: dict[int, torch.Tensor] = {}
        self._inputs: dict[int, torch.Tensor] = {}

    def give_up(self, i: int) -> None:
        """Drop image ``i``'s work in this pass; ``restart`` plans it again."""
        self.oom_images.add(i)
        self._inputs.pop(i, None)
        self._outputs.pop(i, None)

    def restart(self, i: int, plan: list[_Tile]) -> None:
        self.total += len(plan) - self.planned[i]
        self.done -= self.done_per_image[i]
        self.planned[i], self.done_per_image[i] = len(plan), 0
        self.oom_images.discard(i)

    def input(self, i: int, device: torch.device) -> torch.Tensor:
        x = self._inputs.get(i)
        if x is None:
            img = self.images[i]
            if device.type == "cuda":  # bytes cross the bus, not floats; asynchronously from pinned memory
                img = img.pin_memory().to(device, non_blocking=True)
            x = self._inputs[i] = img.float().div_(255) if img.dtype == torch.uint8 else img.float()
        return x

    def window_batch(self, batch: list[_Tile], device: torch.device, channels_last: bool) -> torch.Tensor:
        """The batch's input windows, written straight into one (channels_last) float tensor."""
        h, w = _window_shape(batch[0])
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.empty((len(batch), 3, h, w), device=device, memory_format=fmt)
        for k, t in enumerate(batch):
            x[k].copy_(self.input(t.image, device)[:, t.rows[2] : t.rows[3], t.cols[2] : t.cols[3]])
        return x

    def store(self, i: int, top: int, left: int, core: torch.Tensor) -> torch.Tensor | None:
        """Place one tile's output (host, the output's dtype); returns the whole output when it was the image's
        last tile. Outputs are (3, H, W) views of HWC memory: what encoders need, and rows paste as rows."""
        h, w = self.images[i].shape[1:]
        whole = self.planned[i] == 1 and tuple(core.shape[1:]) == (h * self.scale, w * self.scale)
        if whole:  # one tile is the whole image: its slice of the batch is the output, no copy
            out = core
        else:
            buf = self._outputs.get(i)
            if buf is None:
                shape = (h * self.scale, w * self.scale, 3)
                buf = self._outputs[i] = torch.empty(shape, dtype=core.dtype).permute(2, 0, 1)
            buf[:, top : top + core.shape[1], left : left + core.shape[2]] = core
            out = buf
        self.done_per_image[i] += 1
        self.done += 1
        if self.progress is not None:
            self.progress(Progress(self.done, self.total, i, self.done_per_image[i], self.planned[i]))
        if self.done_per_image[i] < self.planned[i]:
            return None
        self._inputs.pop(i, None)
        return out if whole else self._outputs.pop(i)
