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

Redis calls here are synchronous; the gateway's reads have ``a``-prefixed asynchronous twins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcformat, utcparse

from model.clock import utcnow
from worker import lua
from worker.records import JobError, JobRecord, JobState, OutputInfo, Status, TrainingRun, UpscaleJob, WebhookState
from worker.storage import Storage

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
_DOC = TypeAdapter(UpscaleJob | TrainingRun)


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


class IdempotencyConflict(Exception):
    """The idempotency key was used before (by this client) with other bytes or other options."""


@dataclass
class WebhookClaim:
    """A due webhook delivery someone has claimed: the job as it is now, and the token fencing the record."""

    record: JobRecord
    token: str


def _fmt(t: dt.datetime) -> str:
    return utcformat(t)


def _parse_time(raw: bytes | None) -> dt.datetime | None:
    return utcparse(raw.decode()) if raw else None


def _status(raw: bytes | None) -> Status:
    s = raw.decode() if raw else "queued"
    if s == "stopped":
        return "canceled"
    return s if s in ("queued", "started", "finished", "failed", "canceled") else "queued"  # type: ignore[return-value]


class JobStore:
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

    @property
    def name(self) -> str:
        return self.queue.name

    # -- enqueue ----------------------------------------------------------------------------------------------
    def enqueue(
        self,
        doc: UpscaleJob | TrainingRun,
        upload: bytes | None = None,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        admit: Callable[[], None] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Store the upload and queue its job in one transaction. With an ``idempotency_key`` this client used
        before (within the job TTL) for the same bytes and options, the earlier job is returned instead:
        ``(record, False)``; with other bytes or options, :class:`IdempotencyConflict`. ``admit`` runs just
        before a new job is written and may raise to refuse it (the queue is full); a refused job releases its
        idempotency key."""
        job_id = job_id or new_job_id()
        idem = self.keys.idempotency(idempotency_key, doc.owner) if idempotency_key is not None else None
        if idem is not None:
            fingerprint = _fingerprint(doc)
            if not self.conn.set(idem, f"{job_id} {fingerprint}", nx=True, ex=self.job_ttl_s):
                raw = self.conn.get(idem)
                if raw is not None:
                    earlier_id, earlier_fingerprint = raw.decode().split(" ", 1)
                    if earlier_fingerprint != fingerprint:
                        raise IdempotencyConflict()
                    earlier = self.get(earlier_id)
                    if earlier is not None:
                        return earlier, False
                self.conn.set(idem, f"{job_id} {fingerprint}", ex=self.job_ttl_s)  # the earlier job has expired
        if admit is not None:
            try:
                admit()
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

    # -- reading ----------------------------------------------------------------------------------------------
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

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        with self.conn.pipeline(transaction=False) as pipe:
            for jid in job_ids:
                pipe.hgetall(_job_key(jid) or "rq:job:-")
            raws = pipe.execute()
        return [self.parse(j, raw) for j, raw in zip(job_ids, raws, strict=True)]

    async def aget(self, job_id: str, with_result: bool = False) -> tuple[JobRecord | None, bytes | None]:
        """:meth:`get` on the asynchronous client. With ``with_result`` (and Redis storage) the result is read
        in the same round trip: None until the job has finished."""
        key = _job_key(job_id)
        if key is None:
            return None, None
        result = None
        result_key = self.storage.redis_key("result", job_id) if with_result else None
        if result_key is not None:
            async with self.aconn.pipeline(transaction=False) as pipe:
                pipe.hgetall(key)
                pipe.get(result_key)
                raw, result = await pipe.execute()
        else:
            raw = await self.aconn.hgetall(key)
        record = self.parse(job_id, raw) if raw else None
        if record is None:
            return None, None
        if record.status != "finished":
            return record, None
        if with_result and result_key is None:
            result = await self.storage.aget("result", job_id)
        return record, result

    def depth(self) -> int:
        return int(self.conn.llen(self.queue.key))

    async def adepth(self) -> int:
        return int(await self.aconn.llen(self.queue.key))

    def position(self, job_id: str) -> int | None:
        pos = self.conn.lpos(self.queue.key, job_id)
        return None if pos is None else int(pos)

    async def aposition(self, job_id: str) -> int | None:
        pos = await self.aconn.lpos(self.queue.key, job_id)
        return None if pos is None else int(pos)

    def queued_ids(self, start: int = 0, end: int = -1) -> list[str]:
        return [j.decode() for j in self.conn.lrange(self.queue.key, start, end)]

    def started_ids(self) -> list[str]:
        """Jobs claimed by the queue's registered workers (started, or about to be)."""
        names = [n.decode() for n in self.conn.smembers(self.keys.workers)]
        with self.conn.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.lrange(self.keys.inflight(n), 0, -1)
            lists = pipe.execute() if names else []
        return list(dict.fromkeys(j.decode() for ids in lists for j in ids))

    def registry_ids(self, which: str, limit: int) -> list[str]:
        """The latest ``limit`` job ids of rq's ``started`` (our claims), ``finished``, ``failed`` or
        ``canceled`` registry."""
        reg = {
            "finished": self.queue.finished_job_registry,
            "failed": self.queue.failed_job_registry,
            "canceled": self.queue.canceled_job_registry,
        }[which]
        return [j.decode() for j in self.conn.zrevrange(reg.key, 0, limit - 1)]

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

    # -- the worker's side ------------------------------------------------------------------------------------
    def claim(self, worker: str, n: int, block_s: float | None = None) -> list[Claim]:
        """Take up to ``n`` queued jobs (waiting up to ``block_s`` for the first) onto ``worker``'s claim list
        and start them, in one round trip; returns them with their uploads (Redis storage: read in the same
        step; directory storage: read here)."""
        inflight = self.keys.inflight(worker)
        first = ""
        if block_s:
            got = self.conn.blmove(self.queue.key, inflight, block_s, "LEFT", "RIGHT")
            if got is None:
                return []
            first = got.decode()
        now = _fmt(utcnow())
        rows = self._scripts["CLAIM"](
            keys=[self.queue.key, inflight],
            args=[
                n,
                worker,
                now,
                Job.redis_job_namespace_prefix,
                self.keys.claim_prefix,
                self._input_prefix,
                self.job_ttl_s + self.result_ttl_s,
                first,
            ],
        )
        claims = []
        for row in rows:
            jid, token, doc, created, enqueued = (x.decode() if x else "" for x in row[:5])
            record = JobRecord(
                id=jid,
                queue=self.name,
                status="started",
                created_at=_parse_time(created.encode()),
                enqueued_at=_parse_time(enqueued.encode()),
                started_at=utcparse(now),
                attempts=int(token.rsplit(" ", 1)[1]),
                worker=worker,
                data=_DOC.validate_json(doc),
            )
            claims.append(Claim(record, token, row[5] if len(row) > 5 else None))
        if claims and not self._input_prefix:  # uploads not in Redis: read them here
            for c, data in zip(claims, self.storage.get_many("input", [c.id for c in claims]), strict=True):
                c.upload = data
        return claims

    def progress(self, values: list[tuple[Claim, float]]) -> None:
        """Record started jobs' progress (0..1), one round trip for all; a job no longer held is left alone."""
        if not values:
            return
        with self.conn.pipeline(transaction=False) as pipe:
            for c, value in values:
                self._scripts["PROGRESS"](
                    keys=[self.keys.claim(c.id), Job.key_for(c.id)], args=[c.token, round(value, 6)], client=pipe
                )
            pipe.execute()

    def save(self, claim: Claim) -> bool:
        """Write a started job's document (a training run's state as it trains), if the worker still holds it."""
        script = (
            "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
            "redis.call('HSET', KEYS[2], 'srgan', ARGV[2], 'progress', ARGV[3]) return 1"
        )
        return bool(
            self.conn.eval(
                script,
                2,
                self.keys.claim(claim.id),
                Job.key_for(claim.id),
                claim.token,
                claim.record.data.model_dump_json(),
                round(claim.record.progress, 6),
            )
        )

    def finish(self, items: list[tuple[Claim, Any, bytes | None]], worker_key: str = "") -> list[bool]:
        """End started jobs as finished: ``(claim, output, result bytes)`` each, the document's output set from
        ``output``. Result, status, registries, claim, upload and announcement in one atomic step per job, all
        in one round trip; a job no longer held is left alone (False). An upscale job's output records the
        result's sha256 (its strong ETag)."""
        items = [
            (c, o.model_copy(update={"sha256": hashlib.sha256(r).hexdigest()}) if isinstance(o, OutputInfo) and r
             else o, r)
            for c, o, r in items
        ]  # fmt: skip
        return self._end(items, "finished", worker_key)

    def fail(self, items: list[tuple[Claim, JobError]], worker_key: str = "", *, fenced: bool = True) -> list[bool]:
        """End started jobs as failed with their errors (``fenced=False``: whoever holds them, for the reaper
        failing a dead worker's job)."""
        return self._end([(c, e, None) for c, e in items], "failed", worker_key, fenced=fenced)

    def end_canceled(self, claims: list[Claim]) -> list[bool]:
        """End started jobs as canceled (a training run that saw its cancel request)."""
        return self._end([(c, None, None) for c in claims], "canceled", "")

    def _end(self, items, status: str, worker_key: str, fenced: bool = True) -> list[bool]:
        if not items:
            return []
        now = utcnow()
        ok = status == "finished"
        registry = {
            "finished": self.queue.finished_job_registry,
            "failed": self.queue.failed_job_registry,
            "canceled": self.queue.canceled_job_registry,
        }[status].key
        counter = {"finished": "successful_job_count", "failed": "failed_job_count"}.get(status)
        in_redis = self.storage.redis_key("result", "") is not None
        if not in_redis:
            for c, _, result in items:  # the file exists before the job says finished
                if result is not None:
                    self.storage.put("result", c.id, result, self.result_ttl_s)
        with self.conn.pipeline(transaction=False) as pipe:
            for c, detail, result in items:
                update: dict[str, Any] = {"expires_at": _after(now, self.result_ttl_s)}
                update["output" if ok else "error"] = detail
                c.record.data = doc = c.record.data.model_copy(update=update)
                result_key = self.storage.redis_key("result", c.id) if result is not None else None
                keys = [
                    self.keys.claim(c.id),
                    Job.key_for(c.id),
                    self.keys.inflight(c.record.worker or "-"),
                    registry,
                    self.storage.redis_key("input", c.id) or "",
                    result_key or "",
                    worker_key if counter else "",
                    self.keys.webhooks if getattr(doc, "callback_url", None) else "",
                ]
                args = [
                    c.token if fenced else "",
                    status,
                    _fmt(now),
                    doc.model_dump_json(),
                    self.result_ttl_s,
                    _score(self.result_ttl_s),
                    result if result_key else b"",
                    self.result_ttl_s,
                    c.id,
                    self.keys.events,
                    counter or "",
                    "1" if ok else "",
                    now.timestamp(),
                ]
                self._scripts["END"](keys=keys, args=args, client=pipe)
            done = [bool(x) for x in pipe.execute()]
        if not in_redis:
            for (c, _, _), d in zip(items, done, strict=True):
                if d:
                    self.storage.delete("input", c.id)
        return done

    def requeue(
        self, job_id: str, from_list: str, *, token: str = "", reason: str | None = None, attempts_change: int = 0
    ) -> bool:
        """Put a job back at the front of its queue (it was accepted first), taking it off ``from_list`` (a claim
        list). ``token``: the claim it must still have (a started job); '' for a job claimed but never started.
        ``reason`` is appended to the job's ``requeued`` list."""
        record = self.get(job_id)
        if record is None:
            self.conn.lrem(from_list, 0, job_id)
            return False
        doc: JobState = record.data
        if reason:
            doc = doc.model_copy(update={"requeued": [*doc.requeued, reason]})
        ttl = self.job_ttl_s
        if doc.expires_at is not None:  # a queued job keeps the expiry its upload was given
            ttl = max(60, int((doc.expires_at - utcnow()).total_seconds()))
        return bool(
            self._scripts["REQUEUE"](
                keys=[self.keys.claim(job_id), Job.key_for(job_id), self.queue.key, from_list],
                args=[token, doc.model_dump_json(), attempts_change, ttl, job_id],
            )
        )

    def give_back(self, worker: str, held: dict[str, str], *, keep_held: bool = False, reason: str) -> list[str]:
        """Put ``worker``'s claimed jobs back at the front of the queue: those it started (``held``: id -> token,
        or a claim token naming it) with their attempt not counted, those claimed and never started as they
        were. ``keep_held``: only the ones it does not hold (after an outage lost a claim's reply)."""
        inflight = self.keys.inflight(worker)
        back = []
        for jid in dict.fromkeys(j.decode() for j in self.conn.lrange(inflight, 0, -1)):
            if keep_held and jid in held:
                continue
            token = held.get(jid) or self.claim_token(jid)
            if token is not None and token.rsplit(" ", 1)[0] == worker:
                done = self.requeue(jid, inflight, token=token, reason=reason, attempts_change=-1)
            else:
                done = self.requeue(jid, inflight)
            if done:
                back.append(jid)
        if not keep_held:
            self.conn.delete(inflight)
        return back

    def clean_registries(self) -> None:
        """rq's own expiry of its registries' entries."""
        from rq.registry import clean_registries

        clean_registries(self.queue)

    def claim_token(self, job_id: str) -> str | None:
        raw = self.conn.get(self.keys.claim(job_id))
        return raw.decode() if raw else None

    # -- listing (GET /v1/jobs) -------------------------------------------------------------------------------
    async def alist(self, owner: str | None, limit: int, cursor: tuple[int, str] | None = None
                    ) -> tuple[list[JobRecord], tuple[int, str] | None]:  # fmt: skip
        """The owner's jobs, newest first: up to ``limit`` after ``cursor`` (the index position, ``(score, id)``,
        of the last job a previous page examined; None: from the newest), and the next page's cursor (None: this
        was the last). Entries whose job has expired are skipped, and dropped from the index as they are met.
        Scores are creation times in µs; jobs created in the same µs are ordered by id (as Redis orders them)."""
        key = self.keys.index(owner)
        records: list[JobRecord] = []
        for _ in range(4):  # a page of expired entries is read past; after a few, a short page with a cursor
            need = limit - len(records)
            async with self.aconn.pipeline(transaction=False) as pipe:
                if cursor is None:
                    pipe.zrevrangebyscore(key, "+inf", "-inf", start=0, num=need + 1, withscores=True)
                else:
                    pipe.zrevrangebyscore(key, cursor[0], cursor[0], withscores=True)  # ties of the cursor's score
                    pipe.zrevrangebyscore(key, f"({cursor[0]}", "-inf", start=0, num=need + 1, withscores=True)
                got = await pipe.execute()
            ties = [] if cursor is None else [(j, s) for j, s in got[0] if j.decode() < cursor[1]]
            rows = [(j.decode(), int(s)) for j, s in ties + got[-1]]
            page, more = rows[:need], len(rows) > need
            async with self.aconn.pipeline(transaction=False) as pipe:
                for jid, _ in page:
                    pipe.hgetall(_job_key(jid) or "rq:job:-")
                raws = await pipe.execute() if page else []
            gone = []
            for (jid, _), raw in zip(page, raws, strict=True):
                rec = self.parse(jid, raw) if raw else None
                if rec is None:
                    gone.append(jid)
                elif rec.data.owner == owner:
                    records.append(rec)
            if gone:
                await self.aconn.zrem(key, *gone)
            if not more:
                return records, None
            cursor = page[-1][1], page[-1][0]
            if len(records) >= limit:
                break
        return records, cursor

    # -- webhook deliveries (the gateway delivers: app/webhooks.py) -------------------------------------------
    async def aclaim_webhooks(self, n: int, lease_s: float, token: str) -> list[WebhookClaim]:
        """Claim up to ``n`` due deliveries for ``lease_s`` seconds (after that, anyone may claim them again)."""
        now = utcnow().timestamp()
        rows = await self._ascripts["WEBHOOK_CLAIM"](
            keys=[self.keys.webhooks], args=[now, now + lease_s, n, Job.redis_job_namespace_prefix, token]
        )
        claims = []
        for jid, flat in rows:
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
            rec = self.parse(jid.decode(), raw)
            if rec is not None:
                claims.append(WebhookClaim(rec, token))
        return claims

    async def arecord_webhook(self, claim: WebhookClaim, state: WebhookState, due: dt.datetime | None) -> bool:
        """Record a delivery attempt: the job's delivery state, and when to try again (None: no more tries).
        False when the claim has lapsed (someone else has it now) or the job has expired."""
        return bool(
            await self._ascripts["WEBHOOK_RECORD"](
                keys=[self.keys.webhooks, Job.key_for(claim.record.id)],
                args=[claim.token, state.model_dump_json(), "" if due is None else due.timestamp(), claim.record.id],
            )
        )

    async def awebhooks_due(self) -> int:
        """Deliveries waiting (due now or later, claimed ones included)."""
        return int(await self.aconn.zcard(self.keys.webhooks))


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
