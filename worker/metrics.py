"""The worker's Prometheus metrics, served on their own port (``SRGAN_WORKER_METRICS_PORT``).

Defined once here; names start with ``srgan_`` and carry their unit; label sets are small and fixed (model,
error code). The gateway's metrics are in ``app/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "OUTPUT_MEGAPIXELS",
    "INFERENCE_SECONDS",
    "ENCODE_SECONDS",
    "DECODE_SECONDS",
    "LOADED_MODEL",
    "DEVICE_MEMORY",
    "BUSY",
    "MODEL_SWAPS",
    "MODEL_LOAD_SECONDS",
    "ACTIVE_VERSION",
    "TRAINING_RUNS",
    "TRAINING_STEP",
]

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
OUTPUT_MEGAPIXELS = Counter("srgan_output_megapixels_total", "Output megapixels produced", ["model"])
INFERENCE_SECONDS = Counter("srgan_inference_seconds_total", "Seconds spent in engine calls", ["model"])
DECODE_SECONDS = Histogram("srgan_decode_seconds", "Decoding one upload", buckets=_IO_BUCKETS)
ENCODE_SECONDS = Histogram("srgan_encode_seconds", "Encoding one result", buckets=_IO_BUCKETS)
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


def set_loaded_model(up, loaded: bool) -> None:
    """Show (or stop showing) an engine in ``srgan_model_loaded_info`` and its version in the active gauge."""
    d = up.describe()
    labels = (
        up.model.name,
        str(up.model.scale),
        str(d["version_number"] or "builtin"),
        d["version"],
        d["device"],
        d["precision"],
    )
    if not loaded:
        try:
            LOADED_MODEL.remove(*labels)
        except KeyError:
            pass
        return
    LOADED_MODEL.labels(*labels).set(1)
    if d["version_number"] is not None:
        ACTIVE_VERSION.labels(up.model.name, str(up.model.scale)).set(d["version_number"])


def measure_device_memory(device) -> None:
    """CUDA: memory allocated by torch; CPU: the process's resident set. ``device`` None: nothing loaded yet."""
    if device is None:
        return
    if device.type == "cuda":
        import torch

        DEVICE_MEMORY.labels(str(device)).set(torch.cuda.memory_allocated(device))
        return
    import os

    try:
        with open("/proc/self/statm") as f:
            DEVICE_MEMORY.labels("cpu").set(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        pass


def serve_metrics(port: int, what: str = "worker") -> None:
    """Serve this process's metrics on ``port`` (0: not at all); the one place a metrics server is started."""
    if not port:
        return
    import logging

    from prometheus_client import start_http_server

    start_http_server(port)
    logging.getLogger(__name__).info("%s metrics on :%d/metrics", what, port)
