"""The batching worker: one long-lived process per device that takes many jobs at once.

:class:`BatchWorker` is a real rq worker (registered, heartbeating, shown by ``rq info`` with its state and
job counts, rq's registries kept right) that never forks and never lets rq fork: CUDA does not survive a fork,
and a fork per job costs more than a small job. Its loop:

1. **claim** up to ``worker_batch_jobs`` job ids, moving them from the queue list to this worker's claim list
   with (B)LMOVE, so a worker killed at any moment leaves them findable (``worker.jobs.reap_dead_workers``);
2. **start** them in one pipeline (rq execution, status ``started``, attempt counted) and read their uploads;
3. **decode** the uploads in a thread pool; while a full batch computes, a pool thread already claims, starts
   and decodes the next one (one batch ahead), so the engine goes from batch to batch without waiting;
4. per model and scale, run every image through **one** ``Upscaler.upscale_iter`` call, so tiles of different
   jobs share batches; the engine's per-tile progress callback feeds each job's ``meta.progress``;
5. as each image completes, **encode and store** it in the thread pool while the next tiles compute, then
   finish the job through rq's own success path and announce it on the events channel.

A heartbeat thread keeps the rq worker key, the executions, the ``alive`` key and the progress fresh while the
main thread computes, and runs maintenance: requeueing dead workers' jobs, sweeping expired files, rq's
registry cleanup. SIGTERM/SIGINT finish the batch in flight (and its encodes), give back what was claimed but
not started, and exit 0; a second signal gives everything back at once and exits.

**Hot swap.** Models load through the registry (``worker/registry.py``): the active version, or the version a
job pins (``name@version``; a few are kept loaded). A watcher thread hears promotions on the registry's pub/sub
channel (and re-reads the active versions every ``worker_model_poll_s`` in case a message was missed), loads
the new version beside the old one while batches keep running, and switches between two batches: the engine
is chosen when a batch starts and never changes under it. Every finished job records the version number and
sha256 that computed it, and when its batch started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.suspension import is_suspended
from rq.worker import BaseWorker, WorkerStatus

from worker import jobs as J
from worker import metrics as M
from worker.storage import make_storage

__all__ = ["BatchWorker", "io_threads", "engine_config"]

log = logging.getLogger(__name__)

# Images this small are decoded / encoded on the compute thread: a thread hand-off would cost more than the work.
_INLINE_INPUT_PIXELS = 64 * 64
_INLINE_OUTPUT_PIXELS = 256 * 256
# Engine calls on this few input pixels run on one CPU thread: waking torch's other threads for every small op
# costs more than it saves (measured: 16x16 bicubic job 2.7 ms instead of 7.7 ms on a busy 2-core machine).
_ONE_THREAD_INPUT_PIXELS = 96 * 96

# Move up to ARGV[1] more job ids from the queue (KEYS[1]) to this worker's claim list (KEYS[2]): one command,
# however many jobs are waiting.
_CLAIM_MORE = """
local ids = {}
for i = 1, tonumber(ARGV[1]) do
    local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    if not id then break end
    ids[#ids + 1] = id
end
return ids
"""


@dataclass
class _Task:
    """One claimed job on its way through the worker."""

    job: Job
    execution: Execution
    data: bytes | None = None  # the upload, until decoded
    decoded: Any = None  # model.imageio.DecodedImage
    error: tuple[str, str] | None = None  # (code, message) of an upload that cannot be processed
    done: bool = False
    tiles: int = 0
    model_version: int | None = None  # what computed it: registry version and sha256 (set when its batch runs)
    model_sha256: str | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def model_key(self) -> tuple[str, int, int | str | None]:
        m = self.job.meta
        pin = m.get("version_pin")
        if isinstance(pin, str) and pin.isdigit():
            pin = int(pin)
        return m["model"], int(m["scale"]), pin or None


def io_threads(settings) -> int:
    """A GPU outruns one or two PNG encoders by far (H200, SRResNet, 256 px in: 211 images/s computed, 16/s
    encoded with 2 threads); the encoders run without the GIL, so use the cores. On a CPU worker those cores
    run the network, and two threads keep decode/encode overlapped without starving it."""
    from model.engine import resolve_device

    if settings.worker_io_threads:
        return settings.worker_io_threads
    if resolve_device(settings.worker_device).type == "cpu":
        return 2
    return max(2, min(16, len(os.sched_getaffinity(0))))


def engine_config(settings):
    """The engine settings of a worker (``SRGAN_WORKER_*``); ``srgan bench service`` times the engine alone with
    the same ones."""
    from model.engine import EngineConfig

    s = settings
    return EngineConfig(
        device=s.worker_device,
        precision=s.worker_precision,
        tile=s.worker_tile,
        batch_size=s.worker_batch_size,
        streams=s.worker_streams,
    )


class _ModelError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class BatchWorker(BaseWorker):
    """A non-forking rq worker that batches the tiles of many jobs through one engine."""

    def __init__(self, settings, *, models: list[str] | None = None, name: str | None = None, connection=None):
        conn = connection if connection is not None else settings.redis()
        self.settings = settings
        self.keys = J.Keys.from_settings(settings)
        name = name or f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        super().__init__(
            [J.open_queue(settings, conn)],
            name=name,
            connection=conn,
            serializer=JSONSerializer,
            worker_ttl=max(1, int(settings.worker_dead_after_s)),
        )
        self.queue = self.queues[0]
        self.storage = make_storage(settings, conn)
        self.preload = list(settings.worker_models if models is None else models)
        self.batch_jobs = settings.worker_batch_jobs  # most jobs claimed at once
        self.result_ttl_s = settings.result_ttl_s  # how long ended jobs (and results) are kept
        from worker.registry import open_registry

        self.registry = open_registry(settings, conn)
        self.engines: dict[tuple[str, int], Any] = {}  # the active version of each model served
        self._versions: OrderedDict[tuple[str, int, int], Any] = OrderedDict()  # other loaded versions (LRU)
        self._staged: dict[tuple[str, int], Any] = {}  # newly active versions loaded, not switched to yet
        self._swap_lock = threading.RLock()  # held by a batch: engines change only between batches
        self._swap_failed: dict[tuple[str, int, int], float] = {}  # version -> when loading it last failed
        self._watch_thread: threading.Thread | None = None
        self._tasks: dict[str, _Task] = {}  # claimed and not yet ended
        self._dirty_progress: dict[str, float] = {}
        self._lock = threading.Lock()  # guards _tasks, _dirty_progress and every meta write
        self.io_threads = io_threads(settings)
        self._pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="srgan-io")
        self._pending: set[Future] = set()
        self._prefetched: Future | None = None  # the next batch, claimed and decoded while this one computes
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._seconds_per_job: float | None = None
        self._cold = False
        self._suspended = False
        self.execution_ttl = int(settings.worker_dead_after_s) + 60  # rq's own abandoned-job check comes last
        self._claim_more = conn.register_script(_CLAIM_MORE)
        self.batches = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    def load_models(self) -> None:
        for spec in self.preload:
            name, scale = J.parse_model(spec, self.settings.default_scale)
            self.engine(name, scale)

    def engine(self, name: str, scale: int, pin: int | str | None = None):
        """The engine of the active version of ``name`` x``scale`` (loaded on first use), or of version ``pin``."""
        with self._swap_lock:
            active = self.engines.get((name, scale))
            if pin is None or (active is not None and pin in (active.model.version_number, active.model.version)):
                if active is None:
                    active = self._load(name, scale)
                    self._install(name, scale, active)
                return active
            if isinstance(pin, int) and (name, scale, pin) in self._versions:
                self._versions.move_to_end((name, scale, pin))
                return self._versions[(name, scale, pin)]
            up = self._load(name, scale, pin)
            key = (name, scale, up.model.version_number)
            if active is not None and key[2] == active.model.version_number:
                return active  # a sha256 prefix of the active version
            up = self._versions.get(key) or up
            self._keep(key, up)
            return up

    def _load(self, name: str, scale: int, pin: int | str | None = None):
        """Load a version (default: the active one) into a new engine, beside whatever is loaded."""
        from model.engine import Upscaler
        from model.registry import RegistryError
        from model.weights import WeightsError
        from model.zoo import NoWeightsError, UnknownModelError, load_model

        t0 = time.perf_counter()
        try:
            if self.registry.spec(name, scale).weightless:
                loaded = load_model(name, scale, version=pin)
            else:
                loaded = self.registry.load(name, scale, pin)
        except (UnknownModelError, NoWeightsError, WeightsError) as e:
            raise _ModelError("model_unavailable", str(e)) from None
        except RegistryError as e:
            raise _ModelError("model_version_unavailable", str(e)) from None
        up = Upscaler(loaded, engine_config(self.settings))
        dt = time.perf_counter() - t0
        M.MODEL_LOAD_SECONDS.labels(name).observe(dt)
        d = up.describe()
        log.info(
            "loaded %s x%d version %s (%s) on %s, %s, tile %s in %.0f ms",
            name,
            scale,
            d["version_number"] or "builtin",
            d["version"][:12],
            d["device"],
            d["precision"],
            d["tile"],
            dt * 1000,
        )
        return up

    def _keep(self, key: tuple[str, int, int], up) -> None:
        """Keep a non-active version loaded (most recently used last); forget the oldest beyond the cache size."""
        if key[2] is None:
            return
        self._versions[key] = up
        self._versions.move_to_end(key)
        while len(self._versions) > self.settings.worker_version_cache:
            self._versions.popitem(last=False)

    def _install(self, name: str, scale: int, up) -> Any:
        """Make ``up`` the active engine of ``name`` x``scale`` (between batches); returns the one it replaces."""
        with self._swap_lock:
            old = self.engines.get((name, scale))
            self.engines[(name, scale)] = up
            self._versions.pop((name, scale, up.model.version_number), None)
            if old is not None and old is not up:
                self._keep((name, scale, old.model.version_number), old)
                od = old.describe()
                try:
                    M.LOADED_MODEL.remove(
                        name,
                        str(scale),
                        str(od["version_number"] or "builtin"),
                        od["version"],
                        od["device"],
                        od["precision"],
                    )
                except KeyError:
                    pass
        d = up.describe()
        M.LOADED_MODEL.labels(
            name, str(scale), str(d["version_number"] or "builtin"), d["version"], d["device"], d["precision"]
        ).set(1)
        if d["version_number"] is not None:
            M.ACTIVE_VERSION.labels(name, str(scale)).set(d["version_number"])
        if self._beat_thread is not None:
            self._advertise()
        return old

    # -- hot swap (watcher thread) -----------------------------------------------------------------------
    def _watch_loop(self) -> None:
        """Hear promotions on the registry channel; re-read the active versions at least every poll interval."""
        poll = self.settings.worker_model_poll_s
        while not self._beat_stop.is_set():
            pubsub = None
            try:
                pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.registry.pointer.channel)
                self.sync_versions()  # what changed while we were not listening
                next_poll = time.monotonic() + poll
                while not self._beat_stop.is_set():
                    # short waits, so that a shutdown is not held up by a long poll interval
                    msg = pubsub.get_message(timeout=min(poll, 0.5))
                    if msg is None and time.monotonic() < next_poll:
                        continue
                    while msg is not None and pubsub.get_message(timeout=0) is not None:
                        pass  # several changes at once: one look at the active versions covers them all
                    self.sync_versions()
                    next_poll = time.monotonic() + poll
            except Exception:  # Redis restarted or a load failed unexpectedly: listen again shortly
                log.exception("worker %s: model watcher failed; retrying", self.name)
                self._beat_stop.wait(1)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def sync_versions(self) -> None:
        """Load the newly active version of every learned model served, and switch to it between batches."""
        active_map = self.registry.pointer.active_map()
        with self._swap_lock:
            serving = {
                k: (self._staged[k][0] if k in self._staged else up).model.version_number
                for k, up in self.engines.items()
                if up.model.version_number is not None
            }
        for (name, scale), current in serving.items():
            want = self.registry.active_version(name, scale, active_map)
            if want is None or want == current:
                continue
            if time.monotonic() - self._swap_failed.get((name, scale, want), -1e9) < 60:
                continue  # it failed to load a moment ago: keep serving, try again later
            with self._swap_lock:
                up = self._versions.get((name, scale, want))
            outcome = "cached" if up is not None else "loaded"
            if up is None:
                try:
                    up = self._load(name, scale, want)
                except _ModelError as e:
                    self._swap_failed[(name, scale, want)] = time.monotonic()
                    M.MODEL_SWAPS.labels(name, "failed").inc()
                    log.error(
                        "worker %s: cannot load %s x%d version %d, still serving version %s: %s",
                        self.name,
                        name,
                        scale,
                        want,
                        current,
                        e,
                    )
                    continue
            self._stage(name, scale, up, outcome)

    def _stage(self, name: str, scale: int, up, outcome: str) -> None:
        """Switch between two batches: the main thread switches at the start of its next batch; when it is idle
        (or its batch ends first) this thread gets the lock and switches itself."""
        self._staged[(name, scale)] = (up, outcome)
        with self._swap_lock:
            self._apply_staged()

    def _apply_staged(self) -> None:
        """Between batches (main thread, holding the swap lock): switch to the versions staged meanwhile."""
        while self._staged:
            (name, scale), (up, outcome) = self._staged.popitem()
            self._switch(name, scale, up, outcome)

    def _switch(self, name: str, scale: int, up, outcome: str) -> None:
        old = self._install(name, scale, up)
        M.MODEL_SWAPS.labels(name, outcome).inc()
        log.info(
            "worker %s: %s x%d now serves version %s (was %s; %s)",
            self.name,
            name,
            scale,
            up.model.version_number,
            old.model.version_number if old is not None else None,
            outcome,
        )

    def work(self, burst: bool = False, logging_level: str | None = None, **_: Any) -> bool:
        """Run until stopped (or, with ``burst``, until the queue is empty). Returns whether any job ran."""
        self._install_signal_handlers()
        self.load_models()
        self.bootstrap(logging_level or logging.getLevelName(logging.getLogger().level))
        if logging.getLogger().level > logging.DEBUG:
            logging.getLogger("rq.worker").setLevel(logging.WARNING)  # not three lines per job
        log.info(
            "worker %s: serving queue %r with %s",
            self.name,
            self.queue.name,
            ", ".join(f"{n} x{s}" for n, s in self.engines) or "no model yet",
        )
        self._advertise()
        self._beat_thread = threading.Thread(target=self._heartbeat_loop, name="srgan-heartbeat", daemon=True)
        self._beat_thread.start()
        self._start_watcher()
        worked = False
        try:
            while not self._stop_requested:
                if self._suspended:  # `rq suspend` (the heartbeat thread looks)
                    self.set_state(WorkerStatus.SUSPENDED)
                    time.sleep(0.5)
                    continue
                self._wait_for_encoders(max_pending=max(2, self.batch_jobs, self.io_threads))
                tasks = self._take_prefetched()
                if tasks:
                    self.set_state(WorkerStatus.BUSY)  # the batch before said idle; _claim says busy itself
                else:
                    tasks = self._claim(block_s=None if burst else 1)
                if not tasks:
                    if burst:
                        break
                    continue
                if self._stop_requested:  # claimed during the stop request: give them back untouched
                    break
                worked = True
                with self._swap_lock:  # no version switch while a batch runs
                    self._apply_staged()
                    self._run_batch(tasks)
                self.batches += 1
        except SystemExit:
            self._cold = True
            raise
        finally:
            self._shutdown_cleanly()
        return worked

    def _start_watcher(self) -> None:
        self._watch_thread = threading.Thread(target=self._watch_loop, name="srgan-model-watcher", daemon=True)
        self._watch_thread.start()

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def request_stop(self, signum, frame) -> None:
        if self._stop_requested:
            log.warning("worker %s: second signal, cold shutdown: giving back claimed jobs", self.name)
            raise SystemExit(1)
        log.info("worker %s: %s received, finishing the batch in flight", self.name, signal.Signals(signum).name)
        self._stop_requested = True

    def _shutdown_cleanly(self) -> None:
        if self._prefetched is not None:  # its claims must be on the claim list before _give_back reads it
            wait([self._prefetched], timeout=10)
        if not self._cold:
            self._wait_for_encoders(max_pending=0)
        self._pool.shutdown(wait=not self._cold, cancel_futures=self._cold)
        self._give_back()
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=5)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
        with self.connection.pipeline() as pipe:
            pipe.delete(self.keys.alive(self.name))
            pipe.srem(self.keys.workers, self.name)
            pipe.execute()
        self.teardown()  # rq: register death, unsubscribe
        log.info("worker %s: stopped after %d batch(es)", self.name, self.batches)

    def _give_back(self) -> None:
        """Requeue (at the front) every job still claimed: not started, or cut off by a cold shutdown."""
        inflight = self.keys.inflight(self.name)
        ids = [j.decode() for j in self.connection.lrange(inflight, 0, -1)]
        for jid in dict.fromkeys(ids):
            job = J.fetch_job(self.queue, jid)
            if job is None or job.get_status(refresh=False) in (
                JobStatus.FINISHED,
                JobStatus.FAILED,
                JobStatus.CANCELED,
            ):
                continue
            with self.connection.pipeline() as pipe:
                if job.get_status(refresh=False) == JobStatus.STARTED:
                    job.meta["attempts"] = max(0, int(job.meta.get("attempts") or 1) - 1)  # not its fault
                    J.requeue(job, self.queue, pipe, f"worker {self.name} stopped")
                    ex = self._tasks.get(jid)
                    if ex is not None:
                        ex.execution.delete(job=job, pipeline=pipe)
                else:
                    self.queue.push_job_id(jid, pipeline=pipe, at_front=True)
                pipe.lrem(inflight, 0, jid)
                pipe.execute()
            log.info("worker %s: gave back job %s", self.name, jid)
        self.connection.delete(inflight)

    # -- heartbeat, progress, maintenance (background thread) --------------------------------------------
    def _advertise(self, pipe=None) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "queue": self.queue.name,
            "models": [
                {
                    "name": n,
                    "scale": s,
                    "version": up.model.version_number,
                    "sha256": up.model.version,
                    "device": str(up.device),
                    "precision": up.precision,
                }
                for (n, s), up in list(self.engines.items())
            ],
            "seconds_per_job": self._seconds_per_job,
            "busy": len(self._tasks),
        }
        p = pipe if pipe is not None else self.connection.pipeline()
        p.set(self.keys.alive(self.name), json.dumps(info), px=int(self.settings.worker_dead_after_s * 1000))
        p.sadd(self.keys.workers, self.name)
        if pipe is None:
            p.execute()

    def _heartbeat_loop(self) -> None:
        s = self.settings
        tick = min(s.heartbeat_interval_s, s.progress_interval_s)
        next_beat = next_maint = 0.0
        while not self._beat_stop.wait(tick if next_beat else 0):
            now = time.monotonic()
            try:
                self._flush_progress()
                if now >= next_beat:
                    self._beat()
                    next_beat = now + s.heartbeat_interval_s
                if now >= next_maint:
                    self._maintain()
                    next_maint = now + s.maintenance_interval_s
            except Exception:  # a Redis hiccup must not end the heartbeats; the next tick retries
                log.exception("worker %s: heartbeat failed", self.name)

    def _beat(self) -> None:
        ttl = self.execution_ttl
        with self._lock:
            tasks = list(self._tasks.values())
        with self.connection.pipeline() as pipe:
            self._advertise(pipe)
            self.heartbeat(timeout=max(1, int(self.settings.worker_dead_after_s)) + 5, pipeline=pipe)
            now = J.utcnow()
            for t in tasks:
                t.execution.heartbeat(self.queue.started_job_registry, ttl, pipeline=pipe)
                t.job.heartbeat(now, ttl, pipeline=pipe, xx=True)
            pipe.execute()
        self._suspended = is_suspended(self.connection)
        M.BUSY.set(len(tasks))
        self._measure_memory()

    def _measure_memory(self) -> None:
        up = next(iter(list(self.engines.values())), None)  # every engine of a worker is on its one device
        if up is None:
            return
        dev = up.device
        if dev.type == "cuda":
            import torch

            M.DEVICE_MEMORY.labels(str(dev)).set(torch.cuda.memory_allocated(dev))
        else:
            try:
                with open("/proc/self/statm") as f:
                    M.DEVICE_MEMORY.labels("cpu").set(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
            except (OSError, ValueError):
                pass

    def _flush_progress(self) -> None:
        with self._lock:
            if not self._dirty_progress:
                return
            with self.connection.pipeline(transaction=False) as pipe:
                for jid, value in self._dirty_progress.items():
                    t = self._tasks.get(jid)
                    if t is None or t.done:
                        continue
                    t.job.meta["progress"] = round(value, 4)
                    pipe.hset(t.job.key, "meta", JSONSerializer.dumps(t.job.meta))
                pipe.execute()
            self._dirty_progress.clear()

    def _maintain(self) -> None:
        reaped = J.reap_dead_workers(self.queue, self.storage, self.settings, self.keys)
        if reaped["requeued"]:
            M.JOBS_REQUEUED.inc(len(reaped["requeued"]))
        if reaped["failed"]:
            M.JOBS_FAILED.labels("unknown", "worker_died").inc(len(reaped["failed"]))
        self.storage.sweep()
        self.clean_registries()  # rq's own: after ours, so it never sees a dead worker's job first

    # -- the batch ---------------------------------------------------------------------------------------
    def _claim(self, block_s: float | None) -> list[_Task]:
        conn, inflight = self.connection, self.keys.inflight(self.name)
        if block_s:
            first = conn.blmove(self.queue.key, inflight, block_s, "LEFT", "RIGHT")
            if first is None:
                return []
            ids = [first.decode()]
        else:
            ids = []
        more = self.batch_jobs - len(ids)
        if more > 0:
            ids += [r.decode() for r in self._claim_more(keys=[self.queue.key, inflight], args=[more])]
        if not ids or self._stop_requested:
            return []  # _give_back puts claimed ids back
        return self._start(ids)

    def _start(self, ids: list[str]) -> list[_Task]:
        conn, inflight = self.connection, self.keys.inflight(self.name)
        found = Job.fetch_many(ids, connection=conn, serializer=JSONSerializer)
        jobs, dropped = [], []
        for jid, job in zip(ids, found, strict=True):
            if job is None or job.get_status(refresh=False) != JobStatus.QUEUED:
                dropped.append(jid)  # expired or canceled while we claimed it
            else:
                jobs.append(job)
        tasks = []
        with conn.pipeline() as pipe:
            for jid in dropped:
                pipe.lrem(inflight, 0, jid)
            for job in jobs:
                job.meta["attempts"] = int(job.meta.get("attempts") or 0) + 1
                job.meta.update(worker=self.name, progress=0.0)
                execution = Execution.create(job, self.execution_ttl, pipeline=pipe, worker_name=self.name)
                self.executions[execution.id] = execution
                job.prepare_for_execution(self.name, pipe)
                pipe.hset(job.key, "meta", JSONSerializer.dumps(job.meta))
                pipe.persist(job.key)
                tasks.append(_Task(job, execution))
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            in_redis = self.storage.pipelined and bool(tasks)
            if in_redis:  # read the uploads in the same round trip
                pipe.mget([self.storage.key("input", t.id) for t in tasks])
            replies = pipe.execute()
        if not tasks:
            return []
        inputs = replies[-1] if in_redis else self.storage.get_many("input", [t.id for t in tasks])
        for t, data in zip(tasks, inputs, strict=True):
            t.data = data
            if data is None:
                t.error = ("input_expired", "the upload expired before a worker could process it")
        with self._lock:
            for t in tasks:
                self._tasks[t.id] = t
        M.BATCH_JOBS.observe(len(tasks))
        now = J.utcnow()
        for t in tasks:
            if t.job.enqueued_at is not None:
                M.QUEUE_WAIT.labels(t.job.meta["model"]).observe(
                    max(0.0, (now - _aware(t.job.enqueued_at)).total_seconds())
                )
        return tasks

    def _prefetch(self) -> list[_Task]:
        """In the pool while a batch computes: claim, start and decode the next one, so the compute thread goes
        from one batch to the next without waiting on Redis or decoders (a 2-core CPU worker spent 4-6% of its
        wall time there, measured). One batch ahead at most."""
        tasks = self._claim(block_s=None)
        for t in tasks:
            self._decode(t)
        return tasks

    def _take_prefetched(self) -> list[_Task]:
        f, self._prefetched = self._prefetched, None
        return f.result() if f is not None else []  # a Redis error surfaces here, as it would from _claim

    def _decode(self, t: _Task) -> None:
        """Turn the upload into pixels, or note why it cannot be (failed when its batch runs)."""
        from model.imageio import ImageError, decode

        if t.data is None:
            return
        t1 = time.perf_counter()
        try:
            t.decoded = decode(t.data, self.settings.max_input_pixels)
            M.DECODE_SECONDS.observe(time.perf_counter() - t1)
        except ImageError as e:
            t.error = (e.code, str(e))
        except Exception as e:  # a decoder bug must fail this job, not the batch
            log.exception("decoding job %s failed", t.id)
            t.error = ("corrupt_image", f"the image could not be decoded: {e}")
        t.data = None

    def _decode_all(self, tasks: list[_Task]) -> None:
        """Decode what is not decoded yet: tiny uploads here, the rest in the pool."""

        def small(t: _Task) -> bool:
            return t.job.meta["input"]["width"] * t.job.meta["input"]["height"] <= _INLINE_INPUT_PIXELS

        futures = [self._pool.submit(self._decode, t) for t in tasks if t.data is not None and not small(t)]
        for t in tasks:
            if t.data is not None and small(t):
                self._decode(t)
        wait(futures)

    def _run_batch(self, tasks: list[_Task]) -> None:
        t0 = time.perf_counter()
        self._decode_all(tasks)
        ok = []
        for t in tasks:
            if t.error is not None:
                self._fail(t, *t.error)
            else:
                ok.append(t)
        # A full batch says more jobs are likely waiting; after a partial one a prefetch would mostly find none
        # and only add a Redis round trip and a thread hand-off to each lone job.
        if len(ok) >= self.batch_jobs and self._prefetched is None and not (self._stop_requested or self._suspended):
            self._prefetched = self._pool.submit(self._prefetch)
        groups: dict[tuple[str, int, int | str | None], list[_Task]] = {}
        for t in ok:
            groups.setdefault(t.model_key, []).append(t)
        for (name, scale, pin), group in groups.items():
            try:
                if not self.settings.worker_lazy_load and (name, scale) not in self.engines:
                    raise _ModelError("model_not_served", f"this worker does not serve {name} x{scale}")
                up = self.engine(name, scale, pin)
            except _ModelError as e:
                for t in group:
                    self._fail(t, e.code, str(e))
                continue
            self._run_group(up, group)
        self.set_state(WorkerStatus.IDLE)
        dt = time.perf_counter() - t0
        per_job = dt / max(1, len(tasks))
        self._seconds_per_job = (
            per_job if self._seconds_per_job is None else 0.8 * self._seconds_per_job + 0.2 * per_job
        )

    def _run_group(self, up, ready: list[_Task]) -> None:
        batch_at = J.iso(J.utcnow())
        with self._lock:  # the engine of this batch is fixed now: record what computes these jobs, and when
            for t in ready:
                t.model_version, t.model_sha256 = up.model.version_number, up.model.version
                t.job.meta["batch_started_at"] = batch_at
        model = up.model.name
        last: dict[int, float] = {}
        interval = self.settings.progress_interval_s

        def on_progress(p) -> None:
            t = ready[p.image]
            t.tiles = p.image_total
            now = time.monotonic()
            if p.image_done < p.image_total and now - last.get(p.image, 0.0) < interval:
                return
            last[p.image] = now
            with self._lock:  # the heartbeat thread writes it out; no Redis I/O on the compute thread
                self._dirty_progress[t.id] = min(0.99, p.image_done / p.image_total)

        t0 = time.perf_counter()
        seen: set[int] = set()
        threads = _torch_threads(up, sum(t.decoded.width * t.decoded.height for t in ready))
        try:
            for i, result in up.upscale_iter([t.decoded.rgb for t in ready], on_progress):
                seen.add(i)
                t = ready[i]
                if isinstance(result, Exception):
                    code = "image_too_large" if type(result).__name__ == "ImageTooLargeError" else "engine_error"
                    self._fail(t, code, str(result))
                    continue
                M.TILES.labels(model).inc(t.tiles)
                M.OUTPUT_MEGAPIXELS.labels(model).inc(result.shape[1] * result.shape[2] / 1e6)
                if result.shape[1] * result.shape[2] <= _INLINE_OUTPUT_PIXELS:
                    self._finish(t, result)
                else:
                    self._pending.add(self._pool.submit(self._finish, t, result))
        except Exception as e:  # an engine failure fails the jobs it had not finished, and only those
            log.exception("engine call failed for %d job(s)", len(ready) - len(seen))
            for i, t in enumerate(ready):
                if i not in seen:
                    self._fail(t, "engine_error", f"the engine failed: {e}")
        finally:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
        M.INFERENCE_SECONDS.labels(model).inc(time.perf_counter() - t0)
        M.BATCH_TILES.observe(sum(t.tiles for t in ready))

    def _wait_for_encoders(self, max_pending: int) -> None:
        self._pending = {f for f in self._pending if not f.done()}
        while len(self._pending) > max_pending:
            done, self._pending = wait(self._pending, return_when="FIRST_COMPLETED")
            for f in done:
                if f.exception() is not None:  # _finish catches its own errors; this is a bug
                    log.error("finishing a job failed", exc_info=f.exception())

    # -- ending a job (thread pool) ----------------------------------------------------------------------
    def _finish(self, t: _Task, sr) -> None:
        from model.imageio import CONTENT_TYPES, encode

        meta = t.job.meta
        try:
            t1 = time.perf_counter()
            data = encode(
                t.decoded,
                sr,
                meta["format"],
                int(meta.get("quality") or 90),
                png_compress_level=self.settings.worker_png_compress_level,
            )
            M.ENCODE_SECONDS.observe(time.perf_counter() - t1)
        except Exception as e:
            log.exception("encoding job %s failed", t.id)
            self._fail(t, "encode_failed", f"the result could not be encoded: {e}")
            return
        output = {
            "width": int(sr.shape[2]),
            "height": int(sr.shape[1]),
            "bytes": len(data),
            "content_type": CONTENT_TYPES[meta["format"]],
        }
        try:
            self._end(t, ok=True, output=output, result=data)
        except Exception:
            log.exception("storing the result of job %s failed", t.id)
            t.done = False
            self._fail(t, "storage_error", "the result could not be stored")

    def _fail(self, t: _Task, code: str, message: str) -> None:
        log.warning("job %s failed: %s: %s", t.id, code, message)
        M.JOBS_FAILED.labels(t.job.meta.get("model", "unknown"), code).inc()
        self._end(t, ok=False, error={"code": code, "message": message})

    def _end(
        self,
        t: _Task,
        ok: bool,
        output: dict | None = None,
        error: dict | None = None,
        result: bytes | None = None,
        canceled: bool = False,
    ) -> None:
        """Commit a job's end in one round trip: the result, the meta, rq's own bookkeeping (status, finished
        or failed registry, Result, execution, worker counters), the claim, the upload, the announcement.

        The jobs never have rq dependents, repeats or rate limits, so rq's ``handle_job_success`` (which looks
        for those with a WATCH and more round trips) is not needed; the pieces it commits are the same.
        """
        job, conn, ttl = t.job, self.connection, self.result_ttl_s
        with self._lock:  # after this the heartbeat thread no longer writes this job's progress
            if t.done:
                return
            t.done = True
            self._dirty_progress.pop(t.id, None)
        job.ended_at = J.utcnow()
        job.meta.update(
            progress=1.0 if ok else job.meta.get("progress", 0.0),
            output=output,
            error=error,
            expires_at=J.expiry(ttl, job.ended_at),
        )
        if ok:
            job.meta.update(model_version=t.model_version, model_sha256=t.model_sha256)
        in_redis = self.storage.pipelined
        if result is not None and not in_redis:
            self.storage.put("result", job.id, result, ttl)  # the file exists before "finished"
        execution = t.execution
        with conn.pipeline() as pipe:
            if result is not None and in_redis:
                self.storage.put("result", job.id, result, ttl, pipeline=pipe)
            pipe.hset(job.key, "meta", JSONSerializer.dumps(job.meta))
            if ok:
                job._result = {"output": output}
                job._handle_success(
                    ttl,
                    pipeline=pipe,
                    worker_name=self.name,
                    execution_id=execution.id,
                    execution_started_at=execution.created_at,
                    execution_ended_at=job.ended_at,
                )
                job.cleanup(ttl, pipeline=pipe, remove_from_queue=False)
                self.increment_successful_job_count(pipeline=pipe)
            elif canceled:
                job.cancel(pipeline=pipe)
                pipe.expire(job.key, ttl)
            else:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                job._handle_failure(
                    f"{error['code']}: {error['message']}",
                    pipeline=pipe,
                    worker_name=self.name,
                    execution_id=execution.id,
                    execution_started_at=execution.created_at,
                    execution_ended_at=job.ended_at,
                )
                self.increment_failed_job_count(pipeline=pipe)
            if job.started_at is not None:
                self.increment_total_working_time(job.ended_at - _aware(job.started_at), pipe)
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            self.storage.delete("input", job.id, pipeline=pipe if in_redis else None)
            pipe.lrem(self.keys.inflight(self.name), 0, job.id)
            J.publish(
                conn, self.keys, job.id, "finished" if ok else "canceled" if canceled else "failed", pipeline=pipe
            )
            pipe.execute()
        with self._lock:
            self._tasks.pop(t.id, None)
        t.decoded = None
        if ok:
            model = job.meta["model"]
            M.JOBS_FINISHED.labels(model).inc()
            if job.started_at is not None:
                M.PROCESSING.labels(model).observe((job.ended_at - _aware(job.started_at)).total_seconds())
            if job.enqueued_at is not None:
                M.END_TO_END.labels(model).observe((job.ended_at - _aware(job.enqueued_at)).total_seconds())


def _torch_threads(up, input_pixels: int) -> int | None:
    """Drop to one CPU thread for a tiny engine call; returns the thread count to restore (None: unchanged)."""
    if up.device.type != "cpu" or input_pixels > _ONE_THREAD_INPUT_PIXELS:
        return None
    import torch

    n = torch.get_num_threads()
    if n == 1:
        return None
    torch.set_num_threads(1)
    return n


def _aware(t):
    import datetime as dt

    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def run_worker(
    settings,
    *,
    models: list[str] | None = None,
    burst: bool = False,
    on_ready: Callable[[BatchWorker], None] | None = None,
) -> int:
    """Build and run one worker (``srgan worker``); returns the exit status."""
    if settings.worker_threads:
        import torch

        torch.set_num_threads(settings.worker_threads)
    w = BatchWorker(settings, models=models)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port)
        log.info("worker metrics on :%d/metrics", settings.worker_metrics_port)
    if on_ready is not None:
        on_ready(w)
    w.work(burst=burst)
    return 0
