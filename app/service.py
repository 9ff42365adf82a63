"""What the routes share: the Redis clients, the job stores of the two queues, the storage, the job-event
listener, the model registry and its catalog.

One :class:`Gateway` is built by the app's lifespan (``app/main.py``) and reached from routes through
``app/deps.py``. The job stores (``worker/jobs.py``) own every read and write of a job; the gateway only picks
the client: the asynchronous one (a bounded, blocking pool: a burst of requests waits for a connection instead
of failing) for the read paths, the synchronous one for the thread-pool paths (enqueue, the registry). Long-polls
wait on :class:`app.events.JobEvents`, which also hears the registry's channel and drops the cached model catalog
when a version is promoted.
"""

from __future__ import annotations

import logging
import threading
import time

from app.events import JobEvents
from worker.jobs import JobStore
from worker.presence import alive_workers, estimated_seconds_per_job, live_workers
from worker.records import WorkerInfo
from worker.retry import REDIS_DOWN
from worker.storage import make_storage

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

_CATALOG_MAX_AGE_S = 30  # the model catalog is re-read at least this often
_CATALOG_RETRY_S = 5  # and after a failed re-read, this soon


class Gateway:
    def __init__(self, settings):
        import redis.asyncio as aredis
        from redis.asyncio.connection import BlockingConnectionPool

        from worker.registry import open_registry

        s = self.settings = settings
        self.redis = settings.redis(retries=2, name="srgan-gateway")  # the thread-pool paths
        # The read paths: a bounded pool that makes a burst of requests wait for a connection, never fail.
        pool = BlockingConnectionPool.from_url(s.redis_url, max_connections=s.redis_max_connections, timeout=30,
                                               socket_timeout=30, socket_connect_timeout=5,
                                               client_name="srgan-gateway-async")  # fmt: skip
        self.aredis = aredis.Redis(connection_pool=pool, health_check_interval=30)
        self.storage = make_storage(settings, self.redis, aconnection=self.aredis)
        self.jobs = JobStore.for_queue(settings, self.redis, self.storage, aconnection=self.aredis)
        self.runs = JobStore.for_queue(settings, self.redis, self.storage, training=True, aconnection=self.aredis)
        self.registry = open_registry(settings, self.redis)
        self.registry_lock = threading.Lock()  # one registration (load, smoke test, gate) at a time
        self.events = JobEvents(self.aredis, self.jobs.keys.events,
                                {self.registry.pointer.channel: lambda _: self.invalidate_catalog()})  # fmt: skip
        self._catalog: tuple[float, list[dict]] | None = None
        self._refreshing = threading.Lock()
        self._workers: tuple[float, dict[str, WorkerInfo]] | None = None

    async def start(self) -> None:
        try:
            self.catalog()  # read the model cards now, not during the first upload
        except REDIS_DOWN as e:  # alive but not ready: /readyz says why, the catalog is read later
            log.warning("gateway: cannot read the active model versions yet (%s)", e)
        await self.events.start()

    async def close(self) -> None:
        await self.events.close()
        await self.aredis.aclose()
        self.redis.close()

    # -- models ------------------------------------------------------------------------------------------
    def catalog(self) -> list[dict]:
        """Every servable (model, scale) with its active version and every version's sha256 (the registry's
        catalog); re-read after a promotion (registry channel) or a registration, and at least every 30 s. The
        periodic re-read runs in a thread while requests keep the one they have: reading the cards takes tens
        of ms, which the event loop (every request in flight) would otherwise wait for."""
        now = time.monotonic()
        cached = self._catalog
        if cached is None:
            cached = self._catalog = (now, self.registry.catalog())
        elif now - cached[0] > _CATALOG_MAX_AGE_S and self._refreshing.acquire(blocking=False):  # one re-read at a time
            threading.Thread(target=self._refresh, name="srgan-catalog", daemon=True).start()
        return cached[1]

    def _refresh(self) -> None:
        seen = self._catalog
        try:
            fresh = (time.monotonic(), self.registry.catalog())
            if self._catalog is seen:  # not invalidated meanwhile (the next request reads it then)
                self._catalog = fresh
        except Exception as e:  # the old one serves on; the next try in _CATALOG_RETRY_S
            log.warning("gateway: cannot re-read the model catalog (%s)", e)
            if seen is not None and self._catalog is seen:
                self._catalog = (time.monotonic() - _CATALOG_MAX_AGE_S + _CATALOG_RETRY_S, seen[1])
        finally:
            self._refreshing.release()

    def invalidate_catalog(self) -> None:
        self._catalog = None

    # -- workers -----------------------------------------------------------------------------------------
    def live_workers(self, max_age_s: float = 1.0) -> dict[str, WorkerInfo]:
        now = time.monotonic()
        if self._workers is None or now - self._workers[0] > max_age_s:
            self._workers = (now, live_workers(self.redis, self.jobs))
        return self._workers[1]

    async def alive_workers(self, max_age_s: float = 1.0) -> dict[str, WorkerInfo]:
        """:meth:`live_workers` without a thread (same cache)."""
        now = time.monotonic()
        if self._workers is None or now - self._workers[0] > max_age_s:
            self._workers = (now, await alive_workers(self.aredis, self.jobs))
        return self._workers[1]

    def estimated_wait(self, position: int | None) -> float | None:
        """Seconds until a job at ``position`` in the queue starts, from the live workers' rates (cached)."""
        if position is None or self._workers is None:
            return None
        per_job = estimated_seconds_per_job(self._workers[1])
        return None if per_job is None else round((position + 1) * per_job, 3)
