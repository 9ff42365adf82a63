"""Serving a finished job's result the way HTTP caches and download tools expect (RFC 9110, 9111):

- ``ETag``: strong, the result's sha256 (recorded when the job finished): the same bytes, byte for byte, for
  as long as the result is kept;
- ``Cache-Control: private, max-age=<seconds until the result expires>, immutable``: a job's result never
  changes, but it belongs to its client (shared caches keep none);
- ``If-None-Match`` (``*`` or a list, weak comparison) -> ``304 Not Modified`` with no body;
- ``Range: bytes=a-b`` / ``a-`` / ``-n`` (one range) -> ``206 Partial Content`` with ``Content-Range``; a range
  that starts past the end -> ``416`` with ``Content-Range: bytes */<size>``; several ranges, another unit or
  a malformed header are ignored (the whole result, ``200``), as RFC 9110 allows; ``If-Range`` with a
  different ETag (or a date) also gives the whole result;
- ``Accept-Ranges: bytes`` on every answer, and ``HEAD`` answers with the headers ``GET`` would send.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from email.utils import format_datetime

from starlette.datastructures import Headers
from starlette.responses import Response

from app.errors import error_response
from model.clock import utcnow
from model.imageinfo import EXTENSIONS
from worker.records import JobRecord, UpscaleJob

__all__ = ["result_response", "etag_of", "matches", "byte_range", "Unsatisfiable"]


class Unsatisfiable(Exception):
    """The range starts at or past the end of the result."""


def etag_of(job: UpscaleJob, data: bytes) -> str:
    """The result's strong ETag: its sha256 as recorded at finish (computed here for older jobs)."""
    digest = job.output.sha256 if job.output is not None and job.output.sha256 else hashlib.sha256(data).hexdigest()
    return f'"{digest}"'


def matches(header: str | None, etag: str, weak: bool = True) -> bool:
    """Whether an ``If-None-Match``/``If-Range`` value names ``etag`` (``weak``: ``W/"x"`` matches ``"x"``)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    if weak:
        etag = etag.removeprefix("W/")
    elif etag.startswith("W/"):
        return False  # a weak ETag never matches strongly
    for tag in header.split(","):
        tag = tag.strip()
        if (tag.removeprefix("W/") if weak else tag) == etag:
            return True
    return False


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last, inclusive) a ``Range`` header asks of ``size`` bytes; None: answer with
    the whole (no header, several ranges, another unit, bad syntax); :class:`Unsatisfiable` past the end."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":  # the last N bytes
        if last == "":
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - n), size - 1
    a = int(first)
    if last and int(last) < a:
        return None  # invalid: ignored
    if a >= size:
        raise Unsatisfiable()
    return a, min(int(last) if last else size - 1, size - 1)


def result_response(rec: JobRecord, data: bytes, headers: Headers, *, head: bool = False,
                    extra: dict[str, str] | None = None, conditional: bool = True) -> Response:  # fmt: skip
    """The answer to a GET (``head``: HEAD) of a finished job's result, with ``extra`` headers added.
    ``conditional=False`` (the answer to an upload): conditional and range headers do not apply."""
    job: UpscaleJob = rec.data  # type: ignore[assignment]
    etag = etag_of(job, data)
    left = 60 if job.expires_at is None else max(0, math.floor((job.expires_at - utcnow()).total_seconds()))
    common = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={left}, immutable",
        "Accept-Ranges": "bytes",
        **(extra or {}),
    }
    if rec.ended_at is not None:
        common["Last-Modified"] = format_datetime(rec.ended_at.astimezone(dt.UTC), usegmt=True)
    if conditional and matches(headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=common)
    size = len(data)
    span = None
    status = 200
    if conditional and (headers.get("if-range") is None or matches(headers.get("if-range"), etag, weak=False)):
        try:
            span = byte_range(headers.get("range"), size)
        except Unsatisfiable:
            return error_response(
                416,
                "range_not_satisfiable",
                f"the range {headers.get('range')!r} starts past the end of the {size:,}-byte result",
                {**common, "Content-Range": f"bytes */{size}"},
            )
    ctype = job.output.content_type if job.output else "application/octet-stream"
    common["Content-Disposition"] = f'inline; filename="{rec.id}{EXTENSIONS.get(job.format, ".bin")}"'
    common["X-Model-Version"] = "" if job.model_version is None else str(job.model_version)
    common["X-Model-Sha256"] = job.model_sha256 or ""
    if span is not None:
        a, b = span
        common["Content-Range"] = f"bytes {a}-{b}/{size}"
        body, status = data[a : b + 1], 206
    else:
        body = data
    if head:
        return Response(status_code=status, media_type=ctype, headers={**common, "Content-Length": str(len(body))})
    return Response(body, status_code=status, media_type=ctype, headers=common)
