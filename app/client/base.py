"""What the sync and the async client share: the retry policy, request building and answer parsing."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.client.types import ServiceError

__all__ = ["Keys", "Retry", "check", "parse_retry_after", "upload"]


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class Retry:
    """When to try a request again: a full queue (429), a gateway or Redis hiccup (502/503/504) and a broken
    connection. The wait is the answer's ``Retry-After`` when it gives one (never less), else exponential
    backoff with jitter. A ``Retry-After`` longer than ``max_delay`` is not waited for: the error is raised.

    Uploads are safe to retry: the client sends an ``Idempotency-Key``, so a retried POST never makes two jobs.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_delay: float = 60.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds before try ``attempt + 1`` (``attempt`` counts from 0), or None to give up."""
        if attempt >= self.attempts:
            return None
        if response is not None:
            if response.status_code not in self.statuses:
                return None
            after = parse_retry_after(response.headers.get("Retry-After"))
            if after is not None:
                return after if after <= self.max_delay else None
        return min(self.max_delay, self.backoff * 2**attempt) * (0.5 + random.random() / 2)


NO_RETRY = Retry(attempts=0)


def check(r: httpx.Response) -> httpx.Response:
    """The response, or its error raised as :class:`ServiceError`."""
    if r.status_code < 400:
        return r
    try:
        err = r.json()["error"]
        code, message = err["code"], err["message"]
    except Exception:
        code, message = "http_error", r.text[:200] or r.reason_phrase
    raise ServiceError(r.status_code, code, message, parse_retry_after(r.headers.get("Retry-After")))


def upload(
    image: str | Path | bytes,
    filename: str | None,
    idempotency_key: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of ``POST /v1/upscale`` for httpx."""
    if isinstance(image, (str, Path)):
        filename = filename or Path(image).name
        image = Path(image).read_bytes()
    unknown = set(options) - {"model", "scale", "format", "quality", "callback_url", "realism"}
    if unknown:
        raise TypeError(f"unknown upscale options: {', '.join(sorted(unknown))}")
    return {
        "files": {"file": (filename or "image", image)},
        "data": {k: str(v) for k, v in options.items() if v is not None},
        "headers": {"Idempotency-Key": idempotency_key or uuid.uuid4().hex},
    }


def base_url(url: str) -> str:
    return url.rstrip("/")


class Keys(httpx.Auth):
    """``Authorization: Bearer`` with the right key for each request: the admin key on the admin routes (model
    versions, training runs), the client key (``api_key``) on every other route; none where none is given."""

    def __init__(self, url: str, api_key: str | None = None, admin_key: str | None = None):
        self.prefix = httpx.URL(base_url(url)).path.rstrip("/")  # a gateway behind a path prefix
        self.api_key, self.admin_key = api_key, admin_key

    def auth_flow(self, request: httpx.Request):
        from app.paths import is_admin_path

        path = request.url.path
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
        key = self.admin_key if is_admin_path(path) else self.api_key
        if key and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {key}"
        yield request
