"""The job lifecycle, in one place: enqueue (with idempotency), claim and start, progress, finish, fail, cancel,
give back, and reading a job. The gateway and the workers call :class:`JobStore`; nothing else touches rq's job
hashes or the service's job keys.

A job is an rq job (``rq:job:<id>``, on rq's queue list ``rq:queue:<name>``), so ``rq info`` and rq's registries
see it; rq never runs it (:func:`upscale_job` is only its function reference). The service's fields live in the
same hash (``worker/records.py``). The service's own keys (:class:`Keys`) hold what rq has no place for: each
worker's claim list (claims move ids there atomically, so a worker that dies leaves them findable), each started
job's claim token (the fence: ``worker/lua.py``), idempotency keys, the channel on which jobs' ends are
announced to long-polls, each owner's listing index (newest first, for ``GET /v1/jobs``), and the queue of
webhook deliveries (jobs with a ``callback_url`` whose end is yet to be delivered, by due time). Workers' presence
and the dead-worker reaper are in ``worker/presence.py``.

:class:`JobStore` is put together from one module per concern: enqueue (with idempotency) and cancel here;
reading and listing in ``worker/jobreads.py``; the worker's side (claim, progress, finish, fail, requeue, give
back) in ``worker/jobends.py``; the webhook queue in ``worker/webhookqueue.py``; the keys, the claim and
reading a job's hash in ``worker/jobbase.py``.

Redis calls are synchronous; the gateway's reads have ``a``-prefixed asynchronous twins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from model.clock import utcnow
from worker import lua
from worker.jobbase import Claim, Keys, _after, _fmt, _score
from worker.jobends import JobEnds
from worker.jobreads import JobReads
from worker.records import JobRecord, TrainingRun, UpscaleJob
from worker.storage import Storage
from worker.webhookqueue import WebhookClaim, WebhookQueue

__all__ = [
    "JOB_FUNC",
    "TRAINING_FUNC",
    "Keys",
    "JobStore",
    "Claim",
    "IdempotencyConflict",
    "WebhookClaim",
    "new_job_id",
    "upscale_job",
    "training_job",
]

JOB_FUNC = "worker.jobs.upscale_job"
TRAINING_FUNC = "worker.jobs.training_job"


def upscale_job(**_: Any) -> None:
    """The function reference of every upscale job. The batching worker runs these jobs; a plain rq worker
    that picks one up by mistake fails it with this message instead of computing it one at a time."""
    raise RuntimeError("srgan upscale jobs are run by `srgan worker`, not by a plain rq worker")


def training_job(**_: Any) -> None:
    """The function reference of every training run: runs are taken by ``srgan worker --queue training``."""
    raise RuntimeError("srgan training runs are run by `srgan worker --queue training`, not by a plain rq worker")


def new_job_id() -> str:
    """128 random bits, URL-safe: job ids are capabilities, never guessable or sequential."""
    return secrets.token_urlsafe(16)


class IdempotencyConflict(Exception):
    """The idempotency key was used before (by this client) with other bytes or other options."""


class JobStore(JobReads, JobEnds, WebhookQueue):
    """Every transition of the jobs on one queue. ``aconnection`` (a ``redis.asyncio`` client) serves the
    gateway's ``a``-methods."""

    def __init__(
        self,
        connection,
        storage: Storage,
        *,
        prefix: str,
        queue: str,
        job_ttl_s: int,
        result_ttl_s: int,
        max_attempts: int = 3,
        aconnection=None,
    ):
        self.conn = connection
        self.aconn = aconnection
        self.storage = storage
        self.keys = Keys(prefix, queue)
        self.queue = Queue(queue, connection=connection, serializer=JSONSerializer)
        self.job_ttl_s = int(job_ttl_s)  # a queued job (and its upload) expires after this
        self.result_ttl_s = int(result_ttl_s)  # an ended job (and its result) is kept this long
        self.max_attempts = max_attempts
        # How long a job can stay listed: queued for its TTL, an hour to compute (a started job has no TTL), then
        # kept for the result TTL. Longer-running jobs drop out of the listing early (they stay readable).
        self._index_horizon_us = (self.job_ttl_s + 3600 + self.result_ttl_s) * 1_000_000
        self._input_prefix = storage.redis_key("input", "") or ""  # '' when uploads are not in Redis
        self._scripts = {name: connection.register_script(getattr(lua, name)) for name in lua.__all__}
        self._ascripts = (
            {name: aconnection.register_script(getattr(lua, name)) for name in ("WEBHOOK_CLAIM", "WEBHOOK_RECORD")}
            if aconnection is not None
            else {}
        )

    @classmethod
    def for_queue(cls, settings, connection, storage: Storage, *, training: bool = False, aconnection=None):
        """The store of the upscale queue, or (``training``) of the training-run queue."""
        queue, job_ttl, result_ttl = (
            (settings.training_queue, settings.training_result_ttl_s, settings.training_result_ttl_s)
            if training
            else (settings.queue, settings.input_ttl_s, settings.result_ttl_s)
        )
        return cls(
            connection,
            storage,
            prefix=settings.key_prefix,
            queue=queue,
            job_ttl_s=job_ttl,
            result_ttl_s=result_ttl,
            max_attempts=settings.max_attempts,
            aconnection=aconnection,
        )

    # -- enqueue ----------------------------------------------------------------------------------------------
    def enqueue(
        self,
        doc: UpscaleJob | TrainingRun,
        upload: bytes | None = None,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        admit: Callable[[int], None] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Store the upload and queue its job in one transaction. With an ``idempotency_key`` this client used
        before (within the job TTL) for the same bytes and options, the earlier job is returned instead:
        ``(record, False)``; with other bytes or options, :class:`IdempotencyConflict`. ``admit(depth)`` runs
        just before a new job is written, with the queue's depth (read in the same round trip as the key), and
        may raise to refuse it (the queue is full); a refused job releases its idempotency key."""
        job_id = job_id or new_job_id()
        idem = self.keys.idempotency(idempotency_key, doc.owner) if idempotency_key is not None else None
        depth = 0
        if idem is not None:
            fingerprint = _fingerprint(doc)
            with self.conn.pipeline(transaction=False) as pipe:
                pipe.set(idem, f"{job_id} {fingerprint}", nx=True, ex=self.job_ttl_s)
                pipe.llen(self.queue.key)
                fresh, depth = pipe.execute()
            if not fresh:
                raw = self.conn.get(idem)
                if raw is not None:
                    earlier_id, earlier_fingerprint = raw.decode().split(" ", 1)
                    if earlier_fingerprint != fingerprint:
                        raise IdempotencyConflict()
                    earlier = self.get(earlier_id)
                    if earlier is not None:
                        return earlier, False
                self.conn.set(idem, f"{job_id} {fingerprint}", ex=self.job_ttl_s)  # the earlier job has expired
        elif admit is not None:
            depth = int(self.conn.llen(self.queue.key))
        if admit is not None:
            try:
                admit(int(depth))
            except BaseException:
                if idem is not None:
                    self.conn.delete(idem)
                raise
        now = utcnow()
        doc = doc.model_copy(update={"expires_at": now + dt.timedelta(seconds=self.job_ttl_s)})
        func = TRAINING_FUNC if isinstance(doc, TrainingRun) else JOB_FUNC
        job = self.queue.create_job(
            func,
            job_id=job_id,
            ttl=self.job_ttl_s,
            result_ttl=self.result_ttl_s,
            failure_ttl=self.result_ttl_s,
            timeout=-1,
            description=_describe(doc),
        )
        with self.conn.pipeline() as pipe:
            pipe.multi()  # rq's enqueue wants the transaction open before any command is queued
            if upload is not None:  # in Redis: in this transaction; elsewhere: now, before the job is queued
                self.storage.put("input", job_id, upload, self.job_ttl_s, pipeline=pipe)
            self.queue.enqueue_job(job, pipeline=pipe)
            pipe.hset(job.key, mapping={"srgan": doc.model_dump_json(), "progress": "0", "attempts": "0"})
            # The owner's listing index, in plain commands (a Lua step cost 25-60 us of Redis time per job, measured).
            # Lazy trimming: entries older than any job can live go now; expired ones the listing meets go then.
            index, score = self.keys.index(doc.owner), int(now.timestamp() * 1e6)
            pipe.zadd(index, {job_id: score})
            pipe.zremrangebyscore(index, "-inf", f"({score - self._index_horizon_us}")
            pipe.expire(index, self._index_horizon_us // 1_000_000)
            pipe.execute()
        record = JobRecord(
            id=job_id,
            queue=self.name,
            status="queued",
            created_at=job.created_at,
            enqueued_at=job.enqueued_at,
            data=doc,
        )
        return record, True

    # -- cancel -----------------------------------------------------------------------------------------------
    def cancel(self, record: JobRecord) -> bool:
        """Cancel a job no worker has taken yet; False when one has (or it had ended)."""
        now = utcnow()
        doc = record.data.model_copy(update={"error": None, "expires_at": _after(now, self.result_ttl_s)})
        upload = self.storage.redis_key("input", record.id)
        done = self._scripts["CANCEL"](
            keys=[
                self.queue.key,
                Job.key_for(record.id),
                upload or "",
                self.queue.canceled_job_registry.key,
                self.keys.webhooks if getattr(doc, "callback_url", None) else "",
            ],
            args=[
                record.id,
                _fmt(now),
                doc.model_dump_json(),
                self.result_ttl_s,
                _score(self.result_ttl_s),
                self.keys.events,
                now.timestamp(),
            ],
        )
        if done and upload is None:
            self.storage.delete("input", record.id)
        return bool(done)


def _fingerprint(doc: UpscaleJob | TrainingRun) -> str:
    """What makes two requests the same: the upload's bytes and every option (idempotency)."""
    if isinstance(doc, UpscaleJob):
        options = f"{doc.model}|{doc.scale}|{doc.version_pin}|{doc.format}|{doc.quality}|{doc.input.sha256}"
        if doc.callback_url:  # (appended only when set: the fingerprints of earlier jobs stay as they were)
            options += f"|{doc.callback_url}"
        if doc.realism is not None:
            options += f"|realism={doc.realism}"
    else:
        options = repr(sorted(doc.request.items()))
    return hashlib.sha256(options.encode()).hexdigest()


def _describe(doc: UpscaleJob | TrainingRun) -> str:
    if isinstance(doc, UpscaleJob):
        return f"upscale {doc.model} x{doc.scale}"
    return f"train {doc.stage} -> {doc.model} x{doc.scale}"
