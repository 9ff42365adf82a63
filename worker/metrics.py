"""The worker's Prometheus metrics, served on their own port (``SRGAN_WORKER_METRICS_PORT``).

Defined once here; names start with ``srgan_`` and carry their unit; label sets are small and fixed (model,
error code, device). The gateway's metrics are in ``app/metrics.py``. :func:`measure_device` samples the
compute device (memory; on NVIDIA GPUs utilisation, memory and temperature from NVML) from the heartbeat.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "JOBS_FINISHED",
    "JOBS_FAILED",
    "JOBS_REQUEUED",
    "QUEUE_WAIT",
    "PROCESSING",
    "END_TO_END",
    "BATCH_TILES",
    "BATCH_JOBS",
    "TILES",
    "OUTPUT_PIXELS",
    "count_output",
    "per_model",
    "ModelSeries",
    "INFERENCE_SECONDS",
    "ENCODE_SECONDS",
    "DECODE_SECONDS",
    "LOADED_MODEL",
    "DEVICE_MEMORY",
    "GPU_UTILIZATION",
    "GPU_MEMORY_USED",
    "GPU_MEMORY_TOTAL",
    "GPU_TEMPERATURE",
    "measure_device",
    "Nvml",
    "BUSY",
    "set_loaded_model",
    "serve_metrics",
    "MODEL_SWAPS",
    "MODEL_LOAD_SECONDS",
    "ACTIVE_VERSION",
    "STAGE_CPU",
    "ENGINE_CPU",
    "stage_cpu",
    "TRAINING_RUNS",
    "TRAINING_STEP",
]

log = logging.getLogger(__name__)

# No `_created` series: one more time series per counter and histogram child that no query here uses.
disable_created_metrics()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_IO_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

JOBS_FINISHED = Counter("srgan_worker_jobs_finished_total", "Jobs finished", ["model"])
JOBS_FAILED = Counter("srgan_worker_jobs_failed_total", "Jobs failed, by error code", ["model", "code"])
JOBS_REQUEUED = Counter("srgan_worker_jobs_requeued_total", "Jobs of dead workers put back on the queue")
QUEUE_WAIT = Histogram("srgan_job_queue_wait_seconds", "Enqueued to started", ["model"], buckets=_LATENCY_BUCKETS)
PROCESSING = Histogram("srgan_job_processing_seconds", "Started to result stored", ["model"], buckets=_LATENCY_BUCKETS)
END_TO_END = Histogram("srgan_job_end_to_end_seconds", "Enqueued to result stored", ["model"], buckets=_LATENCY_BUCKETS)
BATCH_TILES = Histogram(
    "srgan_batch_tiles",
    "Tiles computed by one engine call (all jobs of a batch)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_JOBS = Histogram(
    "srgan_batch_jobs", "Jobs taken off the queue together", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
)
TILES = Counter("srgan_tiles_processed_total", "Tiles through the network", ["model"])
OUTPUT_PIXELS = Counter(
    "srgan_output_pixels_total", "Output pixels produced (width x height of each result), by model", ["model"]
)
INFERENCE_SECONDS = Counter("srgan_inference_seconds_total", "Seconds spent in engine calls", ["model"])
DECODE_SECONDS = Histogram("srgan_decode_seconds", "Decoding one upload", buckets=_IO_BUCKETS)
ENCODE_SECONDS = Histogram("srgan_encode_seconds", "Encoding one result", buckets=_IO_BUCKETS)
STAGE_CPU = Counter(
    "srgan_worker_stage_cpu_seconds_total",
    "CPU seconds of the thread doing each stage of the batch pipeline (claim, decode, engine, encode, store, "
    "progress); the engine's own worker threads (torch's intra-op pool) are not in it",
    ["stage"],
)
LOADED_MODEL = Gauge(
    "srgan_model_loaded_info",
    "1 for each model served, labelled with its registry version (`builtin` for interpolation) and the weights' sha256",
    ["model", "scale", "version", "sha256", "device", "precision"],
)
MODEL_SWAPS = Counter(
    "srgan_model_swaps_total",
    "Changes of the active version applied by this worker, by outcome: "
    "`loaded` (new weights loaded beside the old), `cached` (a version kept loaded), `failed` "
    "(kept serving the old version)",
    ["model", "outcome"],
)
MODEL_LOAD_SECONDS = Histogram(
    "srgan_model_load_seconds",
    "Loading one model version: weights, checks and the engine's inference form",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ACTIVE_VERSION = Gauge(
    "srgan_model_active_version", "Registry version this worker serves for each learned model", ["model", "scale"]
)
TRAINING_RUNS = Counter(
    "srgan_training_runs_total",
    "Training runs ended by this worker, by outcome (finished, failed, canceled, requeued)",
    ["outcome"],
)
TRAINING_STEP = Gauge("srgan_training_step", "Step of the training run in progress (0: none)")
DEVICE_MEMORY = Gauge(
    "srgan_device_memory_used_bytes",
    "Memory in use on the compute device (CUDA: allocated by torch; CPU: the worker's resident set)",
    ["device"],
)
BUSY = Gauge("srgan_worker_busy_jobs", "Jobs this worker is processing now")
GPU_UTILIZATION = Gauge(
    "srgan_gpu_utilization_ratio",
    "Fraction of the last sample period in which the GPU ran a kernel (NVML; GPU workers only)",
    ["device"],
)
GPU_MEMORY_USED = Gauge(
    "srgan_gpu_memory_used_bytes", "GPU memory in use by all processes (NVML; GPU workers only)", ["device"]
)
GPU_MEMORY_TOTAL = Gauge("srgan_gpu_memory_total_bytes", "GPU memory installed (NVML; GPU workers only)", ["device"])
GPU_TEMPERATURE = Gauge("srgan_gpu_temperature_celsius", "GPU core temperature (NVML; GPU workers only)", ["device"])


class stage_cpu:  # noqa: N801 (used as a context manager, like a function)
    """Add the calling thread's CPU time inside the block to :data:`STAGE_CPU` for ``stage``."""

    __slots__ = ("_counter", "_t0")

    def __init__(self, stage: str):
        self._counter = _STAGES[stage]

    def __enter__(self) -> None:
        self._t0 = time.thread_time()

    def __exit__(self, *exc) -> None:
        self._counter.inc(time.thread_time() - self._t0)


_STAGES = {s: STAGE_CPU.labels(s) for s in ("claim", "decode", "engine", "encode", "store", "progress")}
ENGINE_CPU = _STAGES["engine"]  # the pipeline adds to it once per engine call


def count_output(model: str, height: int, width: int) -> None:
    """One result of ``height`` x ``width`` pixels produced by ``model`` (per-model throughput in pixels)."""
    per_model(model).output_pixels.inc(height * width)


class ModelSeries:
    """The labelled children of the per-job series of one model, looked up once (``labels()`` validates and
    locks on every call: several times per job otherwise)."""

    __slots__ = ("queue_wait", "processing", "end_to_end", "finished", "tiles", "output_pixels")

    def __init__(self, model: str):
        self.queue_wait = QUEUE_WAIT.labels(model)
        self.processing = PROCESSING.labels(model)
        self.end_to_end = END_TO_END.labels(model)
        self.finished = JOBS_FINISHED.labels(model)
        self.tiles = TILES.labels(model)
        self.output_pixels = OUTPUT_PIXELS.labels(model)


_MODEL_SERIES: dict[str, ModelSeries] = {}


def per_model(model: str) -> ModelSeries:
    """:class:`ModelSeries` of ``model`` (these series' children are never removed, so they can be kept)."""
    series = _MODEL_SERIES.get(model)
    if series is None:
        series = _MODEL_SERIES.setdefault(model, ModelSeries(model))
    return series


class Nvml:
    """NVML (``nvidia-ml-py``) for one CUDA device, or nothing: :attr:`handle` is None where there is no NVIDIA
    driver (a CPU worker, a CPU-only image), and every read is then skipped. Opened once per process."""

    def __init__(self, index: int, uuid: str | None = None, nvml: Any = None):
        self.handle = None
        try:
            if nvml is None:
                import pynvml

                nvml = pynvml
            nvml.nvmlInit()
            self.nvml = nvml
            self.handle = (
                nvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else nvml.nvmlDeviceGetHandleByIndex(_nvml_index(index))
            )
        except Exception as e:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
            log.info("no NVML for GPU %d (%s): GPU utilisation and temperature are not exported", index, e)
            self.handle = None

    def sample(self) -> dict[str, float] | None:
        """``{utilization, memory_used, memory_total, temperature}`` now, or None without NVML."""
        if self.handle is None:
            return None
        n, h = self.nvml, self.handle
        try:
            mem = n.nvmlDeviceGetMemoryInfo(h)
            return {
                "utilization": n.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                "memory_used": float(mem.used),
                "memory_total": float(mem.total),
                "temperature": float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            }
        except Exception as e:  # NVMLError (GPU lost, driver reloaded): skip this sample, not the heartbeat
            log.warning("NVML read failed: %s", e)
            return None


def _nvml_index(cuda_index: int) -> int:
    """NVML numbers every GPU of the machine; CUDA only the visible ones, in ``CUDA_VISIBLE_DEVICES`` order."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible) and visible[cuda_index].isdigit():
        return int(visible[cuda_index])
    return cuda_index


_nvml: dict[str, Nvml] = {}


def _nvml_for(device) -> Nvml:
    key = str(device)
    if key not in _nvml:
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        _nvml[key] = Nvml(index, f"GPU-{uuid}" if uuid else None)
    return _nvml[key]


def measure_device(device) -> None:
    """Sample the worker's compute device into the gauges (the heartbeat calls it; None: nothing loaded yet).

    CUDA: memory allocated by torch, and from NVML the GPU's utilisation, memory and temperature (skipped where
    NVML cannot be opened). CPU: the process's resident set, and no GPU series at all.
    """
    if device is None:
        return
    if device.type == "cuda":
        import torch

        name = str(device)
        DEVICE_MEMORY.labels(name).set(torch.cuda.memory_allocated(device))
        s = _nvml_for(device).sample()
        if s is not None:
            GPU_UTILIZATION.labels(name).set(s["utilization"])
            GPU_MEMORY_USED.labels(name).set(s["memory_used"])
            GPU_MEMORY_TOTAL.labels(name).set(s["memory_total"])
            GPU_TEMPERATURE.labels(name).set(s["temperature"])
        return
    try:
        with open("/proc/self/statm") as f:
            DEVICE_MEMORY.labels("cpu").set(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        pass


def set_loaded_model(up, loaded: bool) -> None:
    """Show (or stop showing) an engine in ``srgan_model_loaded_info`` and its version in the active gauge."""
    d = up.describe()
    labels = (up.model.name, str(up.model.scale), str(d["version_number"] or "builtin"), d["version"], d["device"],
              d["precision"])  # fmt: skip
    if not loaded:
        try:
            LOADED_MODEL.remove(*labels)
        except KeyError:
            pass
        return
    LOADED_MODEL.labels(*labels).set(1)
    if d["version_number"] is not None:
        ACTIVE_VERSION.labels(up.model.name, str(up.model.scale)).set(d["version_number"])


def serve_metrics(port: int, what: str = "worker") -> None:
    """Serve this process's metrics on ``port`` (0: not at all); the one place a metrics server is started."""
    if not port:
        return
    from prometheus_client import start_http_server

    start_http_server(port)
    log.info("%s metrics on :%d/metrics", what, port)
