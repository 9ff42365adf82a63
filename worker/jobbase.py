"""What every part of the job store shares: the service's Redis keys (:class:`Keys`), a worker's
:class:`Claim`, the attributes of a store (:class:`StoreBase`) and reading a job's hash into its typed record
(:meth:`StoreBase.parse`). :class:`worker.jobs.JobStore` puts the parts together."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from rq import Queue
from rq.job import Job
from rq.utils import utcformat, utcparse

from model.clock import utcnow
from worker.records import JobRecord, Status, TrainingRun, UpscaleJob, WebhookState
from worker.storage import Storage

__all__ = ["Keys", "Claim", "StoreBase"]

_DOC = TypeAdapter(UpscaleJob | TrainingRun)


class Keys:
    """The service's own Redis keys for one queue (rq's are ``rq:...``)."""

    def __init__(self, prefix: str, queue: str):
        self.prefix = prefix
        self.queue = queue
        self.workers = f"{prefix}:workers:{queue}"  # set: names of workers that serve the queue
        self.events = f"{prefix}:events:{queue}"  # pub/sub channel: "<job id> <status>" when a job ends
        self.claim_prefix = f"{prefix}:claim:"
        self.webhooks = f"{prefix}:webhooks:{queue}"  # sorted set: job id -> when its webhook is due (unix s)

    def alive(self, worker: str) -> str:
        return f"{self.prefix}:alive:{worker}"  # TTL'd JSON WorkerInfo

    def inflight(self, worker: str) -> str:
        return f"{self.prefix}:inflight:{worker}"  # list: job ids the worker has claimed

    def claim(self, job_id: str) -> str:
        return self.claim_prefix + job_id  # the token of the worker that started it

    def index(self, owner: str | None) -> str:
        """Sorted set: the owner's job ids by creation time (µs since the epoch); ``-`` holds open mode's jobs."""
        return f"{self.prefix}:index:{self.queue}:{owner or '-'}"

    def idempotency(self, key: str, owner: str | None) -> str:
        digest = hashlib.sha256(f"{owner or ''}\0{key}".encode()).hexdigest()  # scoped to the client
        return f"{self.prefix}:idem:{self.queue}:{digest}"


@dataclass
class Claim:
    """A job a worker has started: its record, its fence token, and its upload (until decoded)."""

    record: JobRecord
    token: str
    upload: bytes | None = None

    @property
    def id(self) -> str:
        return self.record.id


def _fmt(t: dt.datetime) -> str:
    return utcformat(t)


def _parse_time(raw: bytes | None) -> dt.datetime | None:
    """rq's timestamp (``_fmt``) -> an aware UTC datetime. rq's own form, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, is
    read by ``fromisoformat`` (50x faster than rq's ``strptime``, the same datetime); anything else by rq."""
    if not raw:
        return None
    s = raw.decode()
    if len(s) == 27 and s[10] == "T" and s[19] == "." and s[26] == "Z":
        try:
            return dt.datetime.fromisoformat(s)
        except ValueError:
            pass  # rq says what is wrong with it
    return utcparse(s)


def _status(raw: bytes | None) -> Status:
    s = raw.decode() if raw else "queued"
    if s == "stopped":
        return "canceled"
    return s if s in ("queued", "started", "finished", "failed", "canceled") else "queued"  # type: ignore[return-value]


class StoreBase:
    """The state the parts of :class:`worker.jobs.JobStore` share (set by its constructor)."""

    conn: Any  # redis.Redis
    aconn: Any  # redis.asyncio.Redis, or None (the gateway's `a`-methods need it)
    storage: Storage
    keys: Keys
    queue: Queue
    job_ttl_s: int
    result_ttl_s: int
    max_attempts: int
    _index_horizon_us: int
    _input_prefix: str
    _scripts: dict[str, Any]
    _ascripts: dict[str, Any]

    @property
    def name(self) -> str:
        return self.queue.name

    def parse(self, job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
        """A job hash as HGETALL returns it -> the record (None: no such job, or not one of this queue's)."""
        doc = raw.get(b"srgan")
        if not doc or raw.get(b"origin", b"").decode() != self.name:
            return None
        status = _status(raw.get(b"status"))
        queued = status == "queued"
        webhook = raw.get(b"webhook")
        return JobRecord(
            id=job_id,
            queue=self.name,
            status=status,
            created_at=_parse_time(raw.get(b"created_at")),
            enqueued_at=_parse_time(raw.get(b"enqueued_at")),
            started_at=None if queued else _parse_time(raw.get(b"started_at")),
            ended_at=_parse_time(raw.get(b"ended_at")) if status in ("finished", "failed", "canceled") else None,
            progress=1.0 if status == "finished" else float(raw.get(b"progress") or 0.0),
            attempts=int(raw.get(b"attempts") or 0),
            worker=None if queued else (raw.get(b"worker_name") or b"").decode() or None,
            data=_DOC.validate_json(doc),
            webhook=WebhookState.model_validate_json(webhook) if webhook else None,
        )

    def get(self, job_id: str) -> JobRecord | None:
        key = _job_key(job_id)
        return None if key is None else self.parse(job_id, self.conn.hgetall(key))


def _job_key(job_id: str) -> str | None:
    try:
        return Job.key_for(job_id)
    except ValueError:
        return None


def _after(t: dt.datetime, seconds: float) -> dt.datetime:
    return t + dt.timedelta(seconds=seconds)


def _score(ttl_s: int) -> float:
    """rq's registry score: when the entry expires (seconds since the epoch)."""
    return utcnow().timestamp() + ttl_s
