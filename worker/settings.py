"""The settings the gateway and the workers share: environment variables prefixed ``SRGAN_``.

One pydantic-settings class, :class:`ServiceSettings`, holds what both sides must agree on (the Redis URL, the
queue, the key prefix, the storage backend, the TTLs, the registry) and what only workers read. The gateway's own
settings extend it (``app/config.py``: ``Settings``), so the gateway, the worker, ``srgan up`` and the client read
the same environment and cannot disagree. ``app/SETTINGS.md`` is generated from the gateway's class, which holds
every field (``python -m app.config > app/SETTINGS.md``); a test fails when the two drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Settings of the queue, the storage, the registry and the workers. Each field is the environment variable
    ``SRGAN_<NAME>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="SRGAN_", env_file=None, extra="ignore", frozen=True)

    # -- shared: where the queue lives and how long things are kept -----------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis holding the queue, jobs and (by "
        "default) images. `srgan up` starts an embedded one when this is not set.",
    )
    key_prefix: str = Field("srgan", description="prefix of the service's own Redis keys (rq's keys start with `rq:`)")
    queue: str = Field("srgan", description="rq queue name that the gateway fills and the workers drain")
    storage: Literal["redis", "dir"] = Field(
        "redis",
        description="where uploads and results are kept: `redis`, or `dir` (a directory shared by gateway and workers)",
    )
    storage_dir: Path | None = Field(None, description="the shared directory when `storage=dir`")
    input_ttl_s: int = Field(
        3600, ge=1, description="seconds an accepted upload (and its queued job) is kept before it expires unprocessed"
    )
    result_ttl_s: int = Field(
        3600, ge=1, description="seconds a result (and the finished or failed job) is kept after the job ends"
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="how many times a job is started before a worker dying under it fails it with `worker_died`",
    )
    max_input_pixels: int = Field(
        16_000_000, ge=1, description="largest accepted input, width x height, read from the header (413 above)"
    )
    default_scale: int = Field(4, ge=1, description="scale used when a request names none")

    # -- model registry (gateway, workers, training workers and `srgan upscale`) ----------------------------
    models_dir: Path | None = Field(
        None,
        description="registered model versions and the durable copy of which "
        "is active; shared by the gateway and all workers (empty: "
        "`$XDG_DATA_HOME/srgan/models`, i.e. `~/.local/share/srgan/models`)",
    )
    gate_dir: Path | None = Field(
        None,
        description="HR images of the quality gate a new version must pass "
        "(empty: the 5 photographs shipped in `model/gate`)",
    )
    gate_tolerance_db: float = Field(
        0.1,
        ge=0,
        description="a new version passes the gate when its PSNR-Y on "
        "the gate set is at least the active version's minus this",
    )

    # -- worker ------------------------------------------------------------------------------------------
    worker_models: Annotated[list[str], NoDecode] = Field(
        ["srresnet"], description="models a worker loads at start, `NAME` or `NAME_xSCALE`, comma-separated"
    )
    worker_lazy_load: bool = Field(
        True, description="load other models on their first job (else such jobs fail with `model_not_served`)"
    )
    worker_batch_jobs: int = Field(8, ge=1, description="most jobs a worker takes at once; their tiles share batches")
    worker_device: str = Field("auto", description="`auto`, `cpu`, `cuda`, `cuda:1`, ...")
    worker_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="engine precision")
    worker_tile: int | None = Field(
        None, ge=0, description="tile size in input pixels (empty: the engine's default; 0: whole images)"
    )
    worker_batch_size: int | None = Field(
        None, ge=1, description="tiles per forward pass (empty: the engine's default)"
    )
    worker_threads: int | None = Field(None, ge=1, description="torch CPU threads (empty: torch's default)")
    worker_compile: Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "off", description="`torch.compile` the network in this mode (`off`: eager; measured no gain on CPU)"
    )
    worker_cuda_graphs: bool = Field(
        False, description="CUDA: replay each tile shape from a recorded CUDA graph (ignored with `worker_compile`)"
    )
    worker_streams: int | None = Field(
        None,
        ge=1,
        description="CPU: forward passes a batch is split into, run "
        "at once on a share of the threads each (empty: one per thread; 1: one "
        "pass on all threads)",
    )
    worker_io_threads: int | None = Field(
        None,
        ge=1,
        description="threads that decode inputs and encode results "
        "while tiles compute (empty: 2 on a CPU worker, where they share the "
        "cores with inference; on a GPU worker one per CPU core, up to 16)",
    )
    worker_png_compress_level: int = Field(
        1,
        ge=0,
        le=9,
        description="PNG result compression: 0-3 ISA-L's fast levels, 4-9 zlib's (slower, usually smaller files)",
    )
    worker_metrics_port: int = Field(9100, ge=0, description="worker Prometheus port (0: off)")
    heartbeat_interval_s: float = Field(
        2.0, gt=0, description="how often a worker says it is alive, also while it computes"
    )
    worker_dead_after_s: float = Field(
        15.0, gt=0, description="a worker silent this long is dead: its jobs are requeued"
    )
    maintenance_interval_s: float = Field(
        5.0, gt=0, description="how often each worker looks for dead workers' jobs and expired files"
    )
    progress_interval_s: float = Field(0.25, gt=0, description="least time between two progress updates of a job")
    worker_model_poll_s: float = Field(
        5.0,
        gt=0,
        description="how often a worker re-reads the active versions; "
        "a fallback, promotions reach workers at once over pub/sub",
    )
    worker_version_cache: int = Field(
        2,
        ge=0,
        description="loaded versions a worker keeps besides the active "
        "ones (the one just replaced, pinned ones): rolling back to one of them "
        "loads nothing",
    )

    # -- training runs (`srgan worker --queue training`) ------------------------------------------------------
    training_queue: str = Field(
        "training",
        description="rq queue of training runs; a worker started with `--queue` set to it is a training worker",
    )
    training_runs_dir: Path | None = Field(
        None,
        description="where training workers write runs (checkpoints, "
        "samples, exports) (empty: `$XDG_DATA_HOME/srgan/training-runs`)",
    )
    training_result_ttl_s: int = Field(
        604800, ge=1, description="seconds a finished training run's record and last sample grid are kept"
    )

    @field_validator(
        "storage_dir",
        "worker_tile",
        "worker_batch_size",
        "worker_threads",
        "worker_streams",
        "worker_io_threads",
        "models_dir",
        "gate_dir",
        "training_runs_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("worker_models", mode="before")
    @classmethod
    def _split_models(cls, v):
        if isinstance(v, str):
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    def redis(self, *, retries: int = 0, name: str | None = None):
        """A client with its own connection pool (bytes in, bytes out). Commands time out instead of hanging on a
        dead server; ``retries`` > 0 retries a command that failed on a broken connection (only where running
        it twice is harmless: the workers reconcile their claims instead). ``name`` shows in ``CLIENT LIST``."""
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(self.redis_url, health_check_interval=30, socket_timeout=30,
                                    socket_connect_timeout=5, socket_keepalive=True, client_name=name,
                                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries))  # fmt: skip
