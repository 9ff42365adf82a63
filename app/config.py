"""Every setting of the service in one pydantic-settings class: environment variables prefixed ``SRGAN_``.

The gateway, the worker, ``srgan up`` and the client read the same :class:`Settings`, so they agree on the
Redis URL, the queue, the key prefix, the storage backend and the TTLs. ``app/SETTINGS.md`` is generated from
this class (``python -m app.config > app/SETTINGS.md``); a test fails when the two drift apart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings", "settings_markdown"]


class Settings(BaseSettings):
    """Service settings. Each field is the environment variable ``SRGAN_<NAME>`` (case-insensitive)."""

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

    # -- gateway -----------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="gateway listen address (`0.0.0.0` in a container)")
    port: int = Field(8000, description="gateway listen port")
    max_upload_bytes: int = Field(50_000_000, ge=1, description="largest accepted request body (413 above)")
    max_input_pixels: int = Field(
        16_000_000, ge=1, description="largest accepted input, width x height, read from the header (413 above)"
    )
    max_output_pixels: int = Field(64_000_000, ge=1, description="largest output, width x height x scale^2 (422 above)")
    max_queue_depth: int = Field(100, ge=1, description="queued jobs beyond which uploads get 429 with Retry-After")
    max_wait_s: float = Field(60.0, ge=0, description="cap on the `wait` (long-poll) parameter")
    default_model: str = Field("srresnet", description="model used when a request names none")
    default_scale: int = Field(4, ge=1, description="scale used when a request names none")
    default_format: Literal["png", "webp", "jpeg"] = Field("png", description="output format when a request names none")
    default_quality: int = Field(90, ge=1, le=100, description="WebP/JPEG quality when a request names none")
    admin_key: SecretStr | None = Field(
        None,
        description="bearer token of the admin routes (model versions, "
        "training runs): `Authorization: Bearer <key>`; empty: they answer 403",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="client keys, comma-separated: when set (or `api_keys_file`), every `/v1/` request but the "
        "public model list needs `Authorization: Bearer <key>` (401 without); empty: open mode",
    )
    api_keys_file: Path | None = Field(
        None,
        description="a file of client keys, one a line, or each key's sha256 as `sha256:<hex>` or 64 hex digits "
        "(`#` starts a comment); re-read when it changes; a missing file stops the gateway from starting",
    )
    max_model_upload_bytes: int = Field(
        200_000_000, ge=1, description="largest weights file accepted by `POST /v1/models/{name}/versions` (413 above)"
    )

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
        "admin_key",
        "api_keys",
        "api_keys_file",
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

    def redis(self):
        """A client with its own connection pool (bytes in, bytes out)."""
        import redis

        return redis.Redis.from_url(self.redis_url, health_check_interval=30)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def _default_text(field) -> str:
    d = field.default
    if d is None:
        return "(empty)"
    if isinstance(d, list):
        return ",".join(d)
    return str(d)


def settings_markdown() -> str:
    """The settings table of ``app/SETTINGS.md``."""
    lines = [
        "# Settings",
        "",
        "Environment variables read by the gateway, the worker, `srgan up` and the client (one "
        "`pydantic-settings` class, `app/config.py`). Generated by `python -m app.config > app/SETTINGS.md`; "
        "`tests/test_service_settings.py` fails when this file and the class disagree.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        lines.append(f"| `SRGAN_{name.upper()}` | `{_default_text(field)}` | {field.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
