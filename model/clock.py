"""UTC timestamps as the service writes them everywhere (job records, model cards, registry events): ISO 8601
with milliseconds and a ``Z``. The one place that makes them."""

from __future__ import annotations

import datetime as dt

__all__ = ["utcnow", "iso", "iso_now", "parse_iso"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime | None, timespec: str = "milliseconds") -> str | None:
    """``2026-12-01T18:20:00.123Z``; a naive datetime is taken to be UTC."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_now(timespec: str = "milliseconds") -> str:
    return iso(utcnow(), timespec)  # type: ignore[return-value]


def parse_iso(text: str | None) -> dt.datetime | None:
    """The inverse of :func:`iso` (any ISO 8601 form Python reads); always timezone-aware."""
    if not text:
        return None
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
