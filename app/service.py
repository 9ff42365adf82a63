"""What the routes share: the Redis pool, the rq queues, the storage, the job-event listener, the model registry
and its catalog.

One :class:`Gateway` is built by the app's lifespan (``app/main.py``) and reached from routes through
``app/deps.py``. Redis calls here are synchronous (rq is); async routes call them through the thread pool.
Long-polls (``wait``) sleep on an :class:`asyncio.Event` that :class:`JobEvents` sets when a worker announces a
status change on the queue's pub/sub channel, so a waiting request costs no thread and no polling. The same
listener hears the registry's channel and drops the cached model catalog when a version is promoted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any

import redis

from worker import jobs as J
from worker.storage import make_storage

__all__ = ["Gateway", "JobEvents"]

log = logging.getLogger(__name__)


class JobEvents:
    """One pub/sub subscription per gateway process; wakes the requests waiting on a job (and calls
    ``others[channel](data)`` for messages on the other channels it is given)."""

    def __init__(self, redis_url: str, channel: str, others: dict[str, Callable[[bytes], None]] | None = None):
        self.redis_url = redis_url
        self.channel = channel
        self.others = dict(others or {})
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None
        self._client = None

    async def start(self) -> None:
        import redis.asyncio as aredis

        self._client = aredis.Redis.from_url(self.redis_url)
        self._task = asyncio.create_task(self._listen(), name="srgan-job-events")

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, *self.others)
                for callback in self.others.values():
                    callback(b"")  # (re)subscribed: whatever changed meanwhile
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    other = self.others.get(msg["channel"].decode())
                    if other is not None:
                        other(msg["data"])
                        continue
                    jid = msg["data"].split(b" ", 1)[0].decode()
                    for ev in self._waiters.get(jid, ()):
                        ev.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarted: waiters fall back to their periodic re-check
                log.warning("job event listener: %s; reconnecting", e)
                await asyncio.sleep(1)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._client is not None:
            await self._client.aclose()

    @contextmanager
    def watch(self, job_id: str):
        ev = asyncio.Event()
        self._waiters[job_id].add(ev)
        try:
            yield ev
        finally:
            self._waiters[job_id].discard(ev)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    async def wait_until(
        self,
        job_id: str,
        timeout: float,
        read: Callable[[], Awaitable[Any]],
        done: Callable[[Any], bool],
        recheck_s: float = 2.0,
    ) -> Any:
        """Re-``read`` the job whenever it changes until ``done(value)`` or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self.watch(job_id) as ev:
            while True:
                ev.clear()  # before reading: an announcement that lands during the read is kept
                value = await read()
                left = deadline - time.monotonic()
                if done(value) or left <= 0:
                    return value
                try:
                    await asyncio.wait_for(ev.wait(), min(left, recheck_s))
                except TimeoutError:
                    pass


class Gateway:
    def __init__(self, settings):
        from worker.registry import open_registry

        self.settings = settings
        self.redis = settings.redis()
        self.aredis = None  # redis.asyncio client for the read paths, opened in start()
        self.queue = J.open_queue(settings, self.redis)
        self.training_queue = J.open_queue(settings.model_copy(update={"queue": settings.training_queue}), self.redis)
        self.storage = make_storage(settings, self.redis)
        self.keys = J.Keys.from_settings(settings)
        self.registry = open_registry(settings, self.redis)
        self.registry_lock = threading.Lock()  # one registration (load, smoke test, gate) at a time
        self.events = JobEvents(
            settings.redis_url, self.keys.events, {self.registry.pointer.channel: lambda _: self.invalidate_catalog()}
        )
        self._catalog: tuple[float, list[dict]] | None = None
        self._workers: tuple[float, dict] | None = None

    async def start(self) -> None:
        import redis.asyncio as aredis

        self.aredis = aredis.Redis.from_url(self.settings.redis_url, health_check_interval=30)
        try:
            self.catalog()  # read the model cards now, not during the first upload
        except redis.RedisError as e:  # alive but not ready: /readyz says why, the catalog is read later
            log.warning("gateway: cannot read the active model versions yet (%s)", e)
        await self.events.start()

    async def close(self) -> None:
        await self.events.close()
        if self.aredis is not None:
            await self.aredis.aclose()
        self.redis.close()

    # -- models ------------------------------------------------------------------------------------------
    def catalog(self) -> list[dict]:
        """Every servable (model, scale) with its active version and every version's sha256 (the registry's
        catalog); re-read after a promotion (registry channel) or a registration, and at least every 30 s."""
        now = time.monotonic()
        cached = self._catalog
        if cached is None or now - cached[0] > 30:
            cached = (now, self.registry.catalog())
            self._catalog = cached
        return cached[1]

    def invalidate_catalog(self) -> None:
        self._catalog = None

    def live_workers(self, max_age_s: float = 1.0) -> dict[str, dict]:
        now = time.monotonic()
        if self._workers is None or now - self._workers[0] > max_age_s:
            self._workers = (now, J.live_workers(self.redis, self.keys))
        return self._workers[1]

    async def alive_workers(self, max_age_s: float = 1.0) -> dict[str, dict]:
        """:meth:`live_workers` without a thread (same cache)."""
        now = time.monotonic()
        if self._workers is None or now - self._workers[0] > max_age_s:
            names = sorted(n.decode() for n in await self.aredis.smembers(self.keys.workers))
            values = await self.aredis.mget([self.keys.alive(n) for n in names]) if names else []
            self._workers = (now, J.parse_live_workers(names, values))
        return self._workers[1]

    # -- jobs ----------------------------------------------------------------------------------------------
    def view(self, job_id: str) -> J.JobView | None:
        job = J.fetch_job(self.queue, job_id)
        if job is None or job.origin != self.queue.name:
            return None
        return J.JobView.from_job(job)

    async def aview(self, job_id: str, with_result: bool = False) -> tuple[J.JobView | None, bytes | None]:
        """:meth:`view` without a thread: the hash is read asynchronously and parsed by rq's own code. With
        ``with_result`` (and Redis storage) the result is read in the same round trip: None until finished."""
        from rq.job import Job
        from rq.serializers import JSONSerializer

        try:
            key = Job.key_for(job_id)
        except ValueError:
            return None, None
        result = None
        if with_result and self.storage.pipelined:
            async with self.aredis.pipeline(transaction=False) as pipe:
                pipe.hgetall(key)
                pipe.get(self.storage.key("result", job_id))
                raw, result = await pipe.execute()
        else:
            raw = await self.aredis.hgetall(key)
        if not raw:
            return None, None
        job = Job(job_id, connection=self.redis, serializer=JSONSerializer)
        job.restore(raw)
        if job.origin != self.queue.name:
            return None, None
        view = J.JobView.from_job(job)
        if with_result and view.status == "finished" and not self.storage.pipelined:
            result = await self.aresult(job_id)
        return view, result

    async def aposition(self, job_id: str) -> int | None:
        pos = await self.aredis.lpos(self.queue.key, job_id)
        return None if pos is None else int(pos)

    async def aresult(self, job_id: str) -> bytes | None:
        if self.storage.pipelined:  # Redis storage: read without a thread
            return await self.aredis.get(self.storage.key("result", job_id))
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.storage.get, "result", job_id)

    def queue_depth(self) -> int:
        return int(self.redis.llen(self.queue.key))

    def position(self, job_id: str) -> int | None:
        pos = self.redis.lpos(self.queue.key, job_id)
        return None if pos is None else int(pos)

    def estimated_wait(self, position: int | None) -> float | None:
        if position is None:
            return None
        per_job = J.estimated_seconds_per_job(self.live_workers())
        return None if per_job is None else round((position + 1) * per_job, 3)
