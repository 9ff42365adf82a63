"""Long-polls that scale: one pub/sub subscription per gateway process, and one read per job per change.

A request that waits on a job (``?wait=N``) registers with :class:`JobEvents` and sleeps on an
:class:`asyncio.Event`; it holds no Redis connection and no thread while it waits. The listener task hears each
job's end on the queue's channel and wakes that job's waiters, and all waiters of a job share one read of it:
a read is joined by every waiter that needs a reading at least as new as the read's start. A thousand waiters on
one job cost one read when it ends; waiters on many jobs cost one read per job. A caller that has just
written the job (the upload route, with ``Prefer: wait``) passes that reading along with :meth:`JobEvents.mark`
taken before it wrote: unless the job was announced (or the listener reconnected) since, it is not read again.
A periodic re-check (shared the same way) covers an announcement lost while the listener was reconnecting, and
every reconnect wakes all waiters to look once. While Redis is down, waiters keep waiting (retrying their read
with backoff) until their deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app import metrics
from worker.retry import REDIS_DOWN, Backoff

__all__ = ["JobEvents"]

_RECENT = 4096  # the jobs whose last announcement is remembered, for mark()

log = logging.getLogger(__name__)


@dataclass
class _Watch:
    """The waiters of one job."""

    waiters: int = 0
    gen: int = 0  # bumped by every announcement of the job (and every listener reconnect)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reading: tuple[int, asyncio.Future] | None = None  # the read in flight, tagged with the gen it started at
    last: tuple[int, float, Any] | None = None  # the last completed read: its gen, when, the value

    def bump(self) -> None:
        self.gen += 1
        self.changed.set()
        self.changed = asyncio.Event()


class JobEvents:
    """``client``: a ``redis.asyncio`` client for the subscription (it holds one connection while running).
    ``others``: callbacks for messages on other channels (``{channel: callback(data)}``), also called with
    ``b""`` after each (re)subscription."""

    def __init__(self, client, channel: str, others: dict[str, Callable[[bytes], None]] | None = None):
        self.client = client
        self.channel = channel
        self.others = dict(others or {})
        self._watches: dict[str, _Watch] = {}
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self._seq = 0  # announcements (and reconnects) heard so far
        self._recent: OrderedDict[str, int] = OrderedDict()  # job -> its last announcement's seq
        self._forgotten = 0  # the latest seq dropped from _recent
        self._reconnected = 0  # the seq at the last (re)subscription

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="srgan-job-events")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def waiters(self) -> int:
        return sum(w.waiters for w in self._watches.values())

    def announce(self, job_id: str) -> None:
        """Wake the waiters of ``job_id`` (the listener calls it for each message; tests may too)."""
        self._seq += 1
        w = self._watches.get(job_id)
        if w is not None:
            w.bump()
        self._recent[job_id] = self._seq
        self._recent.move_to_end(job_id)
        if len(self._recent) > _RECENT:
            self._forgotten = self._recent.popitem(last=False)[1]

    def mark(self) -> int | None:
        """Where the announcements stand, for :meth:`wait_until`'s ``since`` (None: not listening now)."""
        return self._seq if self.connected.is_set() else None

    def _unchanged_since(self, job_id: str, since: int | None) -> bool:
        """Whether no announcement of ``job_id`` can have been heard or missed since ``mark()`` said ``since``."""
        if since is None or not self.connected.is_set():
            return False
        return max(self._reconnected, self._forgotten, self._recent.get(job_id, 0)) <= since

    async def _listen(self) -> None:
        backoff = Backoff("gateway job-event listener", log, cap=2.0)
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, *self.others)
                self._seq += 1
                self._reconnected = self._seq
                self.connected.set()
                backoff.succeeded()
                for w in list(self._watches.values()):
                    w.bump()  # announcements may have been missed while (re)connecting: everyone looks once
                for callback in self.others.values():
                    callback(b"")
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    other = self.others.get(msg["channel"].decode())
                    if other is not None:
                        other(msg["data"])
                    else:
                        self.announce(msg["data"].split(b" ", 1)[0].decode())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarted or unreachable: waiters fall back to their re-checks
                self.connected.clear()
                await asyncio.sleep(backoff.failed(e))
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def wait_until(self, job_id: str, timeout: float, read: Callable[[], Awaitable[Any]],
                         done: Callable[[Any], bool], recheck_s: float = 5.0, initial: Any = None,
                         since: int | None = None) -> Any:  # fmt: skip
        """Re-``read`` the job whenever it changes until ``done(value)`` or ``timeout`` seconds pass; returns the
        last reading. ``initial``: a reading the caller made after ``mark()`` returned ``since``, used as the first
        reading unless the job was announced since. A Redis outage during the wait is waited out until the
        deadline, then raised."""
        deadline = time.monotonic() + timeout
        w = self._watches.setdefault(job_id, _Watch())
        w.waiters += 1
        metrics.LONG_POLL_WAITERS.inc()
        try:
            need = w.gen
            if initial is not None and self._unchanged_since(job_id, since):
                value = initial
            else:
                value = await self._read(w, read, need, deadline, max_age=0.0)
            while not done(value):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                announced = w.gen != need
                if not announced:  # nothing announced since the reading started: sleep until something is
                    try:
                        await asyncio.wait_for(w.changed.wait(), min(left, recheck_s))
                        announced = True
                    except TimeoutError:
                        pass
                need = w.gen
                # After an announcement any reading started since will do; a re-check wants a recent one.
                value = await self._read(w, read, need, deadline, max_age=None if announced else recheck_s / 2)
            return value
        finally:
            w.waiters -= 1
            metrics.LONG_POLL_WAITERS.dec()
            if w.waiters == 0 and self._watches.get(job_id) is w:
                del self._watches[job_id]

    async def _read(self, w: _Watch, read, need: int, deadline: float, max_age: float | None) -> Any:
        """A reading started at generation ``need`` or later: the one in flight, else the last one (if no older
        than ``max_age`` seconds; None: any age), else a new one."""
        tries = 0
        while True:
            if w.reading is None or w.reading[0] < need or w.reading[1].done():
                last = w.last
                if last is not None and last[0] >= need and (max_age is None or time.monotonic() - last[1] < max_age):
                    return last[2]
                w.reading = (w.gen, asyncio.ensure_future(self._do_read(w, read)))
            try:
                return await asyncio.shield(w.reading[1])
            except REDIS_DOWN:  # logged by the listener; wait it out until the deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                w.reading = None
                tries += 1
                await asyncio.sleep(min(left, 0.05 * 2**tries, 1.0))

    @staticmethod
    async def _do_read(w: _Watch, read) -> Any:
        gen = w.gen
        value = await read()
        if w.last is None or w.last[0] <= gen:
            w.last = (gen, time.monotonic(), value)
        return value
