"""The gateway's settings: :class:`Settings` extends the settings it shares with the workers
(``worker/settings.py``) with its own (listen address, request limits, defaults, keys). Every field is an
environment variable prefixed ``SRGAN_``.

``app/SETTINGS.md`` is generated from this class, which holds every field of the service
(``python -m app.config > app/SETTINGS.md``); a test fails when the two drift apart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from worker.settings import ServiceSettings

__all__ = ["Settings", "get_settings", "settings_markdown"]


class Settings(ServiceSettings):
    """Service settings, the gateway's included. Each field is the environment variable ``SRGAN_<NAME>``."""

    # -- gateway -----------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="gateway listen address (`0.0.0.0` in a container)")
    port: int = Field(8000, description="gateway listen port")
    gateway_workers: int = Field(
        1,
        ge=0,
        description="gateway processes `srgan serve` runs on the one port (metrics summed across them); 0: one per "
        "two usable cores (CPU affinity and cgroup quota), at most 8 (`srgan up` and compose use 0)",
    )
    max_upload_bytes: int = Field(50_000_000, ge=1, description="largest accepted request body (413 above)")
    max_output_pixels: int = Field(64_000_000, ge=1, description="largest output, width x height x scale^2 (422 above)")
    max_queue_depth: int = Field(100, ge=1, description="queued jobs beyond which uploads get 429 with Retry-After")
    max_wait_s: float = Field(60.0, ge=0, description="cap on the `wait` (long-poll) parameter")
    redis_max_connections: int = Field(
        64,
        ge=2,
        description="Redis connections one gateway process may open for reads; more concurrent requests wait "
        "for one (long-polls hold none while they wait)",
    )
    default_model: str = Field("srresnet", description="model used when a request names none")
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
    # -- webhooks (`callback_url`; delivered by the gateways: app/webhooks.py) ------------------------------
    webhook_secret: SecretStr | None = Field(
        None,
        description="signs webhook deliveries (`Srgan-Signature: t=<unix>,v1=<HMAC-SHA256 of t.body>`); empty: "
        "uploads with a `callback_url` are refused (422 `webhooks_disabled`)",
    )
    webhook_allow_private: bool = Field(
        False,
        description="allow callback URLs whose host is (or resolves to) a loopback, private, link-local or other "
        "non-public address; off, they are refused at upload and again before each delivery (SSRF)",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="time one delivery attempt may take")
    webhook_retry_for_s: float = Field(
        3600.0,
        gt=0,
        description="how long after a job ends its delivery is retried (exponential backoff) before it is "
        "given up as `failed`; never longer than the job is kept (`result_ttl_s`)",
    )
    webhook_backoff_s: float = Field(
        1.0, gt=0, description="wait before the first retry; each further retry waits twice as long, up to 10 min"
    )

    @field_validator("admin_key", "api_keys", "api_keys_file", "webhook_secret", mode="before")
    @classmethod
    def _empty_key_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v


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
