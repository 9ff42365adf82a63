"""The life of a worker process, whatever its work: signals, the heartbeat and maintenance thread, and a main
loop that outlives Redis.

:class:`WorkerProcess` runs a *body* (the upscale pipeline in ``worker/service.py``, training runs in
``worker/training.py``) that claims batches and runs them. Around it:

- **Signals.** SIGTERM/SIGINT finish the batch in flight (and its encodes), give back what was claimed but not
  ended, and exit 0; a second signal gives everything back at once and exits 1.
- **Heartbeat thread.** Writes progress out, keeps the alive key and rq's worker key fresh while the main thread
  computes, and runs maintenance: requeueing dead workers' jobs, sweeping expired files, rq's registry cleanup.
- **Redis outages.** Any Redis error in the loop or the thread is waited out with backoff, never fatal: the loop
  keeps what it computed (the body stores it when Redis answers), then reconciles its claim list with what it
  holds (a claim whose reply was lost in the outage is given back), and carries on. The process never exits
  because Redis went away, however long it stays away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Protocol

from worker import metrics as M
from worker.jobs import JobStore
from worker.presence import Presence, reap_dead_workers
from worker.records import ServedModel, WorkerInfo
from worker.retry import REDIS_DOWN, Backoff

__all__ = ["WorkerProcess", "Body"]

log = logging.getLogger(__name__)


class Body(Protocol):
    """What a worker does with its claims."""

    @property
    def seconds_per_job(self) -> float | None: ...

    def load(self) -> None: ...
    def start(self) -> None: ...
    def next_batch(self, block_s: float | None) -> list[Any]: ...
    def run(self, tasks: list[Any]) -> None: ...
    def between_batches(self) -> contextlib.AbstractContextManager: ...
    def retry_unstored(self) -> int: ...
    def flush_progress(self) -> None: ...
    def busy(self) -> int: ...
    def held(self) -> dict[str, str]: ...
    def served(self) -> list[ServedModel]: ...
    def device(self) -> Any: ...
    def close(self, cold: bool) -> None: ...


class WorkerProcess:
    def __init__(self, settings, store: JobStore, presence: Presence, body: Body):
        self.settings = settings
        self.store = store
        self.presence = presence
        self.body = body
        self.name = presence.name
        self.stop_requested = False
        self.suspended = False
        self._cold = False
        self._stop_beats = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._outage = Backoff(f"worker {self.name}", log)

    # -- the main loop ----------------------------------------------------------------------------------------
    def work(self, burst: bool = False) -> bool:
        """Run until stopped (or, with ``burst``, until the queue is empty). Returns whether any batch ran."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        self.body.load()
        self._until_redis_answers(self.presence.register)
        log.info(
            "worker %s: serving queue %r with %s",
            self.name,
            self.store.name,
            ", ".join(f"{m.name} x{m.scale}" for m in self.body.served()) or "no model yet",
        )
        self._until_redis_answers(self._beat)
        self._beat_thread = threading.Thread(target=self._heartbeat_loop, name="srgan-heartbeat", daemon=True)
        self._beat_thread.start()
        self.body.start()
        worked = False
        try:
            while not self.stop_requested:
                try:
                    ran = self._step(burst)
                except REDIS_DOWN as e:
                    self._wait_out(e)
                    continue
                worked = worked or ran
                if burst and not ran and not self.suspended:
                    break
        except SystemExit:
            self._cold = True
            raise
        finally:
            self._shutdown()
        return worked

    def _step(self, burst: bool) -> bool:
        """One turn of the loop: store what an outage kept back, then claim and run one batch."""
        self.body.retry_unstored()
        if self._outage.down:
            self._outage.succeeded()
            self._reconcile()
        if self.suspended:  # `rq suspend` (the heartbeat thread looks)
            self._stop_beats.wait(0.5)
            return False
        tasks = self.body.next_batch(None if burst else 1)
        if not tasks:
            return False
        if self.stop_requested:  # claimed during the stop request: given back untouched by the shutdown
            return False
        with self.body.between_batches():  # no version switch while a batch runs
            self.body.run(tasks)
        return True

    def _wait_out(self, error: BaseException) -> None:
        """A Redis error in the loop: wait (interruptibly) before the next try."""
        delay = self._outage.failed(error)
        self._stop_beats.wait(delay)

    def _until_redis_answers(self, fn) -> None:
        while True:
            try:
                fn()
                self._outage.succeeded()
                return
            except REDIS_DOWN as e:
                if self.stop_requested:
                    raise
                self._stop_beats.wait(self._outage.failed(e))

    def _reconcile(self) -> None:
        """After an outage: a claim whose reply was lost left job ids on the claim list that this worker does not
        know it holds; give those back (it keeps the ones it does hold)."""
        back = self.store.give_back(
            self.name,
            self.body.held(),
            keep_held=True,
            reason=f"worker {self.name}: claim reply lost in a Redis outage",
        )
        if back:
            log.warning("worker %s: gave back %d job(s) claimed during the outage", self.name, len(back))

    # -- signals and shutdown ---------------------------------------------------------------------------------
    def request_stop(self, signum, frame) -> None:
        if self.stop_requested:
            log.warning("worker %s: second signal, cold shutdown: giving back claimed jobs", self.name)
            raise SystemExit(1)
        log.info("worker %s: %s received, finishing the batch in flight", self.name, signal.Signals(signum).name)
        self.stop_requested = True

    def _shutdown(self) -> None:
        self.body.close(self._cold)
        deadline = time.monotonic() + (5 if self._cold else 30)
        while time.monotonic() < deadline:  # store what an outage kept back, then give back the rest
            try:
                self.body.retry_unstored()
                back = self.store.give_back(self.name, self.body.held(), reason=f"worker {self.name} stopped")
                for jid in back:
                    log.info("worker %s: gave back job %s", self.name, jid)
                self._stop_beats.set()
                if self._beat_thread is not None:
                    self._beat_thread.join(timeout=5)
                self.presence.leave()
                break
            except REDIS_DOWN as e:  # what is still claimed is requeued by a reaper once this worker is silent
                time.sleep(self._outage.failed(e))
        else:
            log.error("worker %s: Redis did not answer during shutdown; other workers will requeue its jobs", self.name)
        self._stop_beats.set()
        log.info("worker %s: stopped after %d batch(es)", self.name, getattr(self.body, "batches", 0))

    # -- heartbeat, progress, maintenance (background thread) ----------------------------------------------
    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            name=self.name,
            pid=os.getpid(),
            host=socket.gethostname(),
            queue=self.store.name,
            models=self.body.served(),
            seconds_per_job=self.body.seconds_per_job,
            busy=self.body.busy(),
        )

    def _beat(self) -> None:
        busy = self.body.busy()
        self.presence.beat(self._info(), busy=bool(busy))
        M.BUSY.set(busy)

    def _heartbeat_loop(self) -> None:
        s = self.settings
        tick = min(s.heartbeat_interval_s, s.progress_interval_s)
        next_beat = next_maint = 0.0
        trouble = Backoff(f"worker {self.name} heartbeat", log)
        while not self._stop_beats.wait(tick if next_beat else 0):
            now = time.monotonic()
            try:
                self.body.flush_progress()
                if now >= next_beat:
                    self._beat()
                    self.suspended = self.presence.suspended()
                    M.measure_device(self.body.device())
                    next_beat = now + s.heartbeat_interval_s
                if now >= next_maint:
                    self._maintain()
                    next_maint = now + s.maintenance_interval_s
                trouble.succeeded()
            except REDIS_DOWN as e:
                self._stop_beats.wait(min(trouble.failed(e), s.heartbeat_interval_s))
            except Exception:  # a bug must not end the heartbeats; the next tick retries
                log.exception("worker %s: heartbeat failed", self.name)

    def _maintain(self) -> None:
        reaped = reap_dead_workers(self.store, dead_after_s=self.settings.worker_dead_after_s, me=self.name)
        if reaped["requeued"]:
            M.JOBS_REQUEUED.inc(len(reaped["requeued"]))
        if reaped["failed"]:
            M.JOBS_FAILED.labels("unknown", "worker_died").inc(len(reaped["failed"]))
        self.store.storage.sweep()
        self.store.clean_registries()
        self.presence.ensure_registered()
