"""Which workers are alive, and what happens to the jobs of those that are not.

A worker says it is alive with a TTL'd key ``<prefix>:alive:<name>`` (a :class:`~worker.records.WorkerInfo`)
refreshed by its heartbeat, and is listed in ``<prefix>:workers:<queue>``. It is also registered as an rq worker
(never running rq's own loop), so ``rq info`` lists it with its state and job counts.

A worker is dead when its alive key has expired: it was SIGKILLed, ran out of memory, or lost its machine.
:func:`reap_dead_workers` (every worker runs it as maintenance) renames the dead worker's claim list away first,
so two reapers never both take a job, then puts each job back on its queue, or fails it with ``worker_died``
once it has been started ``max_attempts`` times (an image that kills workers must not kill them all in turn).
Just after Redis itself restarted, every alive key may have expired while its worker lives on: reaping waits
until Redis has been up longer than a worker's silence that counts as death.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket

import redis
from rq.serializers import JSONSerializer
from rq.worker import Worker, WorkerStatus

from worker.jobs import JobStore
from worker.records import JobError, WorkerInfo

__all__ = [
    "Presence",
    "live_workers",
    "alive_workers",
    "parse_live_workers",
    "reap_dead_workers",
    "estimated_seconds_per_job",
]

log = logging.getLogger(__name__)


class Presence:
    """One worker's presence on one queue: its alive key, and its rq worker registration."""

    def __init__(self, store: JobStore, name: str | None = None, *, dead_after_s: float):
        self.store = store
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self.dead_after_s = dead_after_s
        # rq's worker object only registers, heartbeats and counts; it never runs rq's loop.
        self.rq = Worker(
            [store.queue],
            name=self.name,
            connection=store.conn,
            serializer=JSONSerializer,
            worker_ttl=max(1, int(dead_after_s)),
        )

    @property
    def counters_key(self) -> str:
        """rq's worker hash, whose job counters the job ends increment."""
        return self.rq.key

    def register(self) -> None:
        self.rq.register_birth()

    def beat(self, info: WorkerInfo, busy: bool) -> None:
        """Say this worker is alive (and busy or idle), in one round trip."""
        keys = self.store.keys
        with self.store.conn.pipeline() as pipe:
            pipe.set(keys.alive(self.name), info.model_dump_json(), px=int(self.dead_after_s * 1000))
            pipe.sadd(keys.workers, self.name)
            self.rq.heartbeat(timeout=max(1, int(self.dead_after_s)) + 5, pipeline=pipe)
            self.rq.set_state(WorkerStatus.BUSY if busy else WorkerStatus.IDLE, pipeline=pipe)
            pipe.execute()

    def ensure_registered(self) -> None:
        """Register again with rq if its worker key is gone (a Redis restart that lost it)."""
        if not self.store.conn.exists(self.rq.key):
            self.rq.register_birth()

    def suspended(self) -> bool:
        """``rq suspend`` was run."""
        from rq.suspension import is_suspended

        return bool(is_suspended(self.store.conn))

    def leave(self) -> None:
        keys = self.store.keys
        with self.store.conn.pipeline() as pipe:
            pipe.delete(keys.alive(self.name))
            pipe.srem(keys.workers, self.name)
            pipe.execute()
        self.rq.register_death()


def live_workers(connection, store: JobStore) -> dict[str, WorkerInfo]:
    """Workers of the queue whose heartbeat has not expired."""
    keys = store.keys
    names = sorted(n.decode() for n in connection.smembers(keys.workers))
    return parse_live_workers(names, connection.mget([keys.alive(n) for n in names]) if names else [])


async def alive_workers(aconnection, store: JobStore) -> dict[str, WorkerInfo]:
    """:func:`live_workers` on an asynchronous client."""
    keys = store.keys
    names = sorted(n.decode() for n in await aconnection.smembers(keys.workers))
    return parse_live_workers(names, await aconnection.mget([keys.alive(n) for n in names]) if names else [])


def parse_live_workers(names: list[str], values: list[bytes | None]) -> dict[str, WorkerInfo]:
    return {n: WorkerInfo.model_validate_json(v) for n, v in zip(names, values, strict=True) if v is not None}


def estimated_seconds_per_job(workers: dict[str, WorkerInfo]) -> float | None:
    """Seconds per job of all live workers together, from the moving averages they advertise."""
    rates = [1.0 / w.seconds_per_job for w in workers.values() if w.seconds_per_job]
    return 1.0 / sum(rates) if rates else None


def reap_dead_workers(store: JobStore, *, dead_after_s: float, me: str | None = None) -> dict[str, list[str]]:
    """Requeue (or fail) the jobs of workers that died holding them; returns ``{"requeued": [...],
    "failed": [...]}``. ``me`` (the caller) is never reaped."""
    conn, keys = store.conn, store.keys
    out: dict[str, list[str]] = {"requeued": [], "failed": []}
    members = [m.decode() for m in conn.smembers(keys.workers)]
    if not members or int(conn.info("server").get("uptime_in_seconds", 1 << 30)) < dead_after_s + 1:
        return out  # Redis just restarted: live workers have not re-announced themselves yet
    for name in members:
        if name == me or conn.exists(keys.alive(name)):
            continue
        grabbed = f"{keys.inflight(name)}:reaping:{secrets.token_hex(4)}"
        try:
            conn.rename(keys.inflight(name), grabbed)
        except redis.ResponseError:  # no such key: it held no jobs, or another reaper took them
            _unregister(store, name)
            continue
        for jid in dict.fromkeys(j.decode() for j in conn.lrange(grabbed, 0, -1)):
            _reap_job(store, jid, name, grabbed, out)
        conn.delete(grabbed)
        _unregister(store, name)
        log.warning("worker %s died: requeued %d job(s), failed %d", name, len(out["requeued"]), len(out["failed"]))
    return out


def _reap_job(store: JobStore, jid: str, dead: str, grabbed: str, out: dict[str, list[str]]) -> None:
    from worker.jobs import Claim

    record = store.get(jid)
    token = store.claim_token(jid)
    if record is None or record.terminal:
        store.conn.lrem(grabbed, 0, jid)
        return
    holder = token.rsplit(" ", 1)[0] if token else record.worker
    if record.status != "started" or holder != dead:  # claimed, never started (or taken by another since)
        if record.status == "queued" and store.requeue(jid, grabbed):
            out["requeued"].append(jid)
        else:
            store.conn.lrem(grabbed, 0, jid)
        return
    token = token or "*"  # its claim key is gone (Redis lost it): it is still this dead worker's job
    if record.attempts >= store.max_attempts:
        message = f"the worker processing this job died {record.attempts} times (killed or out of memory); giving up"
        claim = Claim(record.model_copy(update={"worker": dead}), token)
        if store.fail([(claim, JobError(code="worker_died", message=message))], fenced=token != "*")[0]:
            out["failed"].append(jid)
        store.conn.lrem(grabbed, 0, jid)
    elif store.requeue(jid, grabbed, token=token, reason=f"worker {dead} died"):
        out["requeued"].append(jid)


def _unregister(store: JobStore, name: str) -> None:
    """Forget a dead worker, here and in rq's worker registry (so ``rq info`` stops listing it now rather than
    when its rq key expires)."""
    from rq.worker_registration import unregister

    conn = store.conn
    conn.srem(store.keys.workers, name)
    ghost = Worker([store.queue], name=name, connection=conn, serializer=JSONSerializer, prepare_for_work=False)
    with conn.pipeline() as pipe:
        unregister(ghost, pipe)
        pipe.delete(ghost.key)
        pipe.execute()
