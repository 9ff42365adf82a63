"""Job bookkeeping shared by the gateway and the worker, so the two cannot disagree.

A job is an rq job (``rq:job:<id>``, JSON serializer) on the rq queue ``Settings.queue``, so rq's own tools
(``rq info``, the registries) see it. rq never runs it: :func:`upscale_job` is only its function reference; the
batching worker (``worker/service.py``) takes jobs off the queue itself. The service's fields live in the rq
job's ``meta``:

=================  =======================================================================================
``model``          model name; ``scale``: integer scale; ``version_pin``: the requested registry version or null
``format``         output format (png, webp, jpeg); ``quality``: WebP/JPEG quality
``input``          ``{format, width, height, mode, bytes, sha256}`` read from the upload's header
``attempts``       how many times a worker started the job (a dead worker's job is retried up to
                   ``Settings.max_attempts``, then failed with ``worker_died``)
``progress``       0..1, tiles done / tiles planned
``model_version``  registry version that computed the result (null for interpolation); ``model_sha256``: its
                   weights' sha256 ("builtin" for interpolation); ``batch_started_at``: when its batch started
``output``         ``{width, height, bytes, content_type}`` once finished
``error``          ``{code, message}`` once failed
``expires_at``     when the input (while queued) or the result (once ended) is deleted, ISO 8601 UTC
``worker``         the worker that computes / computed it
=================  =======================================================================================

The service's own keys (:class:`Keys`) hold what rq has no place for: which jobs each worker has claimed
(``inflight``; claims move job ids there atomically, so a worker that dies leaves them findable), which
workers are alive (a TTL'd key refreshed by a heartbeat thread, also saying which models are loaded),
idempotency keys, and the pub/sub channel on which jobs' ends are announced to long-polls.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

__all__ = [
    "JOB_FUNC",
    "TERMINAL",
    "Keys",
    "JobView",
    "IdempotencyConflict",
    "upscale_job",
    "new_job_id",
    "open_queue",
    "fetch_job",
    "enqueue",
    "cancel",
    "publish",
    "requeue",
    "fail",
    "reap_dead_workers",
    "live_workers",
    "parse_live_workers",
    "utcnow",
    "iso",
    "expiry",
    "parse_model",
    "estimated_seconds_per_job",
]

log = logging.getLogger(__name__)

JOB_FUNC = "worker.jobs.upscale_job"
TERMINAL = frozenset({"finished", "failed", "canceled"})
STATUSES = ("queued", "started", "finished", "failed", "canceled")


def upscale_job(**_: Any) -> None:
    """The function reference of every upscale job. The batching worker runs these jobs; a plain rq worker
    that picks one up by mistake fails it with this message instead of computing it one at a time."""
    raise RuntimeError("srgan upscale jobs are run by `srgan worker`, not by a plain rq worker")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    """128 random bits, URL-safe: job ids are capabilities, never guessable or sequential."""
    return secrets.token_urlsafe(16)


def parse_model(spec: str, default_scale: int) -> tuple[str, int]:
    """``NAME`` or ``NAME_xSCALE`` (as weights files are named) -> (name, scale)."""
    name, sep, scale = spec.rpartition("_x")
    if sep and scale.isdigit():
        return name, int(scale)
    return spec, default_scale


class Keys:
    """The service's own Redis keys (rq's are ``rq:...``)."""

    def __init__(self, prefix: str, queue: str):
        self.prefix = prefix
        self.queue = queue
        self.workers = f"{prefix}:workers:{queue}"  # set: names of workers that serve the queue
        self.events = f"{prefix}:events:{queue}"  # pub/sub channel: "<job id> <status>"

    def alive(self, worker: str) -> str:
        return f"{self.prefix}:alive:{worker}"  # TTL'd JSON: models loaded, device, pid

    def inflight(self, worker: str) -> str:
        return f"{self.prefix}:inflight:{worker}"  # list: job ids the worker has claimed

    def idempotency(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.prefix}:idem:{self.queue}:{digest}"

    @classmethod
    def from_settings(cls, settings) -> Keys:
        return cls(settings.key_prefix, settings.queue)


def open_queue(settings, connection) -> Queue:
    return Queue(settings.queue, connection=connection, serializer=JSONSerializer)


def fetch_job(queue: Queue, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)
    except (NoSuchJobError, ValueError):  # ValueError: not a valid job id
        return None


@dataclass
class JobView:
    """What the API says about a job: one reading of the rq job and its meta."""

    id: str
    status: str
    model: str
    scale: int
    format: str
    created_at: dt.datetime | None
    enqueued_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    progress: float
    attempts: int
    model_version: int | None
    model_sha256: str | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, str] | None
    expires_at: str | None
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_job(cls, job: Job) -> JobView:
        meta = job.meta or {}
        status = job.get_status(refresh=False)
        status = str(status.value if hasattr(status, "value") else status)
        if status == "stopped":
            status = "canceled"
        elif status not in STATUSES:  # deferred, scheduled: not used by the service; show as waiting
            status = "queued"
        progress = 1.0 if status == "finished" else float(meta.get("progress") or 0.0)
        return cls(
            id=job.id,
            status=status,
            model=meta.get("model", ""),
            scale=int(meta.get("scale") or 0),
            format=meta.get("format", ""),
            created_at=job.created_at,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at if status != "queued" else None,
            ended_at=job.ended_at if status in TERMINAL else None,
            progress=progress,
            attempts=int(meta.get("attempts") or 0),
            model_version=meta.get("model_version"),
            model_sha256=meta.get("model_sha256"),
            input=meta.get("input") or {},
            output=meta.get("output"),
            error=meta.get("error"),
            expires_at=meta.get("expires_at"),
            meta=meta,
        )


def expiry(seconds: float, start: dt.datetime | None = None) -> str:
    """When something kept ``seconds`` from ``start`` (default: now) expires, ISO 8601 UTC."""
    return iso((start or utcnow()) + dt.timedelta(seconds=seconds))


def enqueue(
    queue: Queue,
    storage,
    settings,
    *,
    job_id: str,
    data: bytes,
    meta: dict[str, Any],
    idempotency_key: str | None = None,
    admit: Callable[[], None] | None = None,
) -> tuple[Job, bool]:
    """Store the upload and enqueue its job in one round trip (Redis storage: atomically).

    With an ``idempotency_key`` that was seen before (within ``input_ttl_s``) the earlier job is returned
    instead: ``(job, False)``. Raises :class:`IdempotencyConflict` when that key came with other bytes or
    other options (model, scale, format, quality).
    ``admit`` runs just before a new job is written and may raise to refuse it (the queue is full); a
    refused job releases its idempotency key.
    """
    conn = queue.connection
    keys = Keys.from_settings(settings)
    options = "|".join(str(meta.get(k)) for k in ("model", "scale", "version_pin", "format", "quality"))
    fingerprint = hashlib.sha256(options.encode() + bytes.fromhex(meta["input"]["sha256"])).hexdigest()
    if idempotency_key is not None:
        idem = keys.idempotency(idempotency_key)
        claimed = conn.set(idem, f"{job_id} {fingerprint}", nx=True, ex=settings.input_ttl_s)
        if not claimed:
            raw = conn.get(idem)
            if raw is not None:
                earlier_id, earlier_fingerprint = raw.decode().split(" ", 1)
                if earlier_fingerprint != fingerprint:
                    raise IdempotencyConflict(earlier_id)
                earlier = fetch_job(queue, earlier_id)
                if earlier is not None:
                    return earlier, False
            conn.set(idem, f"{job_id} {fingerprint}", ex=settings.input_ttl_s)  # the earlier job has expired
    if admit is not None:
        try:
            admit()
        except BaseException:
            if idempotency_key is not None:
                conn.delete(keys.idempotency(idempotency_key))
            raise
    meta = {**meta, "attempts": 0, "progress": 0.0, "expires_at": expiry(settings.input_ttl_s)}
    job = queue.create_job(
        JOB_FUNC,
        job_id=job_id,
        meta=meta,
        ttl=settings.input_ttl_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.result_ttl_s,
        timeout=-1,
        description=f"upscale {meta['model']} x{meta['scale']}",
    )
    with conn.pipeline() as pipe:
        pipe.multi()  # rq's enqueue wants the transaction open before any command is queued
        storage.put("input", job_id, data, settings.input_ttl_s, pipeline=pipe)
        queue.enqueue_job(job, pipeline=pipe)
        pipe.execute()
    return job, True


class IdempotencyConflict(Exception):
    """The idempotency key was used before with different bytes."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


def publish(connection, keys: Keys, job_id: str, status: str, pipeline=None) -> None:
    """Announce that a job has ended (finished, failed, canceled): long-polls waiting on it wake up. Other
    changes are not announced; waiters only wait for an end."""
    (pipeline if pipeline is not None else connection).publish(keys.events, f"{job_id} {status}")


def cancel(queue: Queue, storage, keys: Keys, job: Job) -> bool:
    """Cancel a job that no worker has taken yet. False when it was already taken (or had ended).

    Workers take job ids off the queue list with LMOVE, so a job id still removed by LREM here was not
    taken: the two cannot both win.
    """
    conn = queue.connection
    if not conn.lrem(queue.key, 1, job.id):
        return False
    job.meta.update(error=None, expires_at=expiry(int(job.result_ttl or 0) or 3600))
    job.save_meta()
    job.cancel()
    storage.delete("input", job.id)
    publish(conn, keys, job.id, "canceled")
    return True


def requeue(job: Job, queue: Queue, pipeline, reason: str) -> None:
    """Put a started-but-abandoned job back at the front of its queue (it was accepted first)."""
    job.meta.update(progress=0.0, worker=None)
    job.meta.setdefault("requeued", []).append(reason)
    job.started_at = None
    job.worker_name = None
    job.set_status(JobStatus.QUEUED, pipeline=pipeline)
    job.save(pipeline=pipeline, include_meta=True, include_result=False)
    _forget_executions(queue, job.id, pipeline)
    queue.push_job_id(job.id, pipeline=pipeline, at_front=True)


def _forget_executions(queue: Queue, job_id: str, pipeline) -> None:
    """Drop a job's entries (``<job id>:<execution id>``) from rq's started registry, so rq's own
    abandoned-job cleanup never fails a job that the service has already requeued or failed."""
    registry = queue.started_job_registry.key
    prefix = f"{job_id}:".encode()
    stale = [e for e in queue.connection.zrange(registry, 0, -1) if e.startswith(prefix)]
    if stale:
        pipeline.zrem(registry, *stale)
    from rq.executions import ExecutionRegistry

    pipeline.delete(ExecutionRegistry(job_id, queue.connection).key)


def fail(job: Job, queue: Queue, pipeline, code: str, message: str, result_ttl_s: int) -> None:
    """Fail a job from outside a worker's run (the reaper): rq's failure bookkeeping plus our error."""
    from rq.job_lifecycle import record_job_failure

    job.ended_at = utcnow()
    job.meta.update(error={"code": code, "message": message}, expires_at=expiry(result_ttl_s, job.ended_at))
    job.save(pipeline=pipeline, include_meta=True, include_result=False)
    _forget_executions(queue, job.id, pipeline)
    record_job_failure(job, f"{code}: {message}", pipeline)


def live_workers(connection, keys: Keys) -> dict[str, dict[str, Any]]:
    """Workers of the queue whose heartbeat has not expired: name -> what they advertise."""
    names = sorted(n.decode() for n in connection.smembers(keys.workers))
    return parse_live_workers(names, connection.mget([keys.alive(n) for n in names]) if names else [])


def parse_live_workers(names: list[str], values: list[bytes | None]) -> dict[str, dict[str, Any]]:
    """Worker names and their ``alive`` values (None: expired) -> the live ones' advertisements."""
    return {n: json.loads(v) for n, v in zip(names, values, strict=True) if v is not None}


def reap_dead_workers(queue: Queue, storage, settings, keys: Keys | None = None) -> dict[str, list[str]]:
    """Requeue the jobs of workers that died holding them (SIGKILL, OOM, power loss).

    A worker is dead when its ``alive`` key has expired (no heartbeat for ``worker_dead_after_s``). Its claim
    list is renamed away atomically first, so two reapers (every worker runs one) never both take a job.
    A job that was started ``max_attempts`` times is failed with ``worker_died`` instead of requeued: an
    image that kills workers must not kill them all in turn. Returns ``{"requeued": [...], "failed": [...]}``.
    """
    import redis

    conn = queue.connection
    keys = keys or Keys.from_settings(settings)
    out: dict[str, list[str]] = {"requeued": [], "failed": []}
    for raw in conn.smembers(keys.workers):
        name = raw.decode()
        if conn.exists(keys.alive(name)):
            continue
        grabbed = f"{keys.inflight(name)}:reaping:{secrets.token_hex(4)}"
        try:
            conn.rename(keys.inflight(name), grabbed)
        except redis.ResponseError:  # no such key: it held no jobs, or another reaper took them
            _unregister(conn, keys, queue, name)
            continue
        for jid in dict.fromkeys(j.decode() for j in conn.lrange(grabbed, 0, -1)):
            job = fetch_job(queue, jid)
            if job is None:
                continue  # expired
            status = job.get_status(refresh=False)
            if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
                continue  # it ended just before the worker died
            with conn.pipeline() as pipe:
                attempts = int(job.meta.get("attempts") or 0)
                if status == JobStatus.STARTED and attempts >= settings.max_attempts:
                    fail(
                        job,
                        queue,
                        pipe,
                        "worker_died",
                        f"the worker processing this job died {attempts} times (killed or out of memory); giving up",
                        settings.result_ttl_s,
                    )
                    storage.delete("input", jid, pipeline=pipe if storage.pipelined else None)
                    publish(conn, keys, jid, "failed", pipeline=pipe)
                    out["failed"].append(jid)
                else:
                    requeue(job, queue, pipe, f"worker {name} died")
                    out["requeued"].append(jid)
                pipe.execute()
        conn.delete(grabbed)
        _unregister(conn, keys, queue, name)
        log.warning("worker %s died: requeued %d job(s), failed %d", name, len(out["requeued"]), len(out["failed"]))
    return out


def _unregister(conn, keys: Keys, queue: Queue, name: str) -> None:
    """Forget a dead worker, here and in rq's worker registry (so ``rq info`` stops listing it now rather
    than when its rq key expires)."""
    from rq.worker import BaseWorker
    from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

    rq_key = BaseWorker.redis_worker_namespace_prefix + name
    with conn.pipeline() as pipe:
        pipe.srem(keys.workers, name)
        pipe.delete(rq_key, f"{rq_key}:executions")
        pipe.srem(REDIS_WORKER_KEYS, rq_key)
        pipe.srem(WORKERS_BY_QUEUE_KEY % queue.name, rq_key)
        pipe.execute()


def estimated_seconds_per_job(workers: dict[str, dict[str, Any]]) -> float | None:
    """Seconds per job of all live workers together, from the moving averages they advertise."""
    rates = [1.0 / w["seconds_per_job"] for w in workers.values() if (w.get("seconds_per_job") or 0) > 0]
    return 1.0 / sum(rates) if rates else None
