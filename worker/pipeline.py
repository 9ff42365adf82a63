"""The batch pipeline of an upscale worker: claim -> decode -> engine -> encode -> store.

1. **claim** up to ``worker_batch_jobs`` jobs and start them in one step (``JobStore.claim``), uploads included;
2. **decode** the uploads in a thread pool; while a full batch computes, a pool thread already claims and
   decodes the next one (one batch ahead), so the engine goes from batch to batch without waiting;
3. per model, scale and pinned version, run every image through **one** ``Upscaler.upscale_iter`` call, so tiles
   of different jobs share batches; per-tile progress goes to the heartbeat thread, which writes it out;
4. as each image completes, **encode and store** it in the thread pool while the next tiles compute, ending the
   job (result, status, announcement) in one fenced step (``JobStore.finish``).

A result that cannot be stored because Redis is down is kept, and stored when Redis answers again
(:meth:`BatchPipeline.retry_unstored`, before anything new is claimed): computed work is not thrown away.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import redis

from model.clock import utcnow
from worker import metrics as M
from worker.jobs import Claim, JobStore
from worker.models import ModelError, ModelPool
from worker.records import JobError, OutputInfo, UpscaleJob
from worker.threads import io_threads, torch_threads, weightless

__all__ = ["BatchPipeline", "Task", "io_threads"]

log = logging.getLogger(__name__)

# Images this small are decoded / encoded on the compute thread: a thread hand-off would cost more than the work.
_INLINE_INPUT_PIXELS = 64 * 64
_INLINE_OUTPUT_PIXELS = 256 * 256


@dataclass
class Task:
    """One claimed job on its way through the pipeline."""

    claim: Claim
    decoded: Any = None  # model.imageio.DecodedImage
    error: JobError | None = None  # why it cannot be processed (failed when its batch runs)
    done: bool = False
    tiles: int = 0

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def job(self) -> UpscaleJob:
        return self.claim.record.data  # type: ignore[return-value]


class BatchPipeline:
    """Batches of claimed jobs through decode, the engines of a :class:`ModelPool`, encode and store."""

    def __init__(self, settings, store: JobStore, models: ModelPool, *, worker: str, counters_key: str = ""):
        self.settings = settings
        self.store = store
        self.models = models
        self.worker = worker
        self.counters_key = counters_key  # rq's worker hash: its job counters
        self.batch_jobs = settings.worker_batch_jobs
        self.io_threads = io_threads(settings)
        self.pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="srgan-io")
        self.tasks: dict[str, Task] = {}  # claimed and not yet ended
        self.lock = threading.Lock()  # guards tasks, progress and unstored
        self._progress: dict[str, float] = {}  # written out by the heartbeat thread
        self._unstored: list[tuple[Task, OutputInfo | JobError, bytes | None]] = []
        self._to_commit: list[tuple[Task, OutputInfo | JobError, bytes | None]] = []  # ended, being committed
        self._committing = False  # a thread is committing ends (see _end)
        self._encoding: set[Future] = set()
        self._prefetched: Future | None = None
        self.seconds_per_job: float | None = None  # moving average, advertised for wait estimates
        self.batches = 0
        self.prefetch_allowed = True  # off while stopping

    # -- taking work ----------------------------------------------------------------------------------------
    def next_batch(self, block_s: float | None) -> list[Task]:
        """The batch prefetched meanwhile, or a fresh claim (waiting up to ``block_s`` for a first job)."""
        f, self._prefetched = self._prefetched, None
        if f is not None:
            tasks = f.result()  # a Redis error in the prefetch surfaces here, as it would from a claim
            if tasks:
                return tasks
        return self._claim(block_s)

    def _claim(self, block_s: float | None) -> list[Task]:
        claims = self.store.claim(self.worker, self.batch_jobs, block_s)
        with M.stage_cpu("claim"):  # (the wait for a first job above is idle, not CPU)
            return self._took(claims)

    def _took(self, claims: list[Claim]) -> list[Task]:
        tasks = [Task(c) for c in claims]
        now = utcnow()
        with self.lock:
            for t in tasks:
                self.tasks[t.id] = t
        for t in tasks:
            if t.claim.upload is None:
                t.error = JobError(code="input_expired", message="the upload expired before a worker could process it")
            enqueued = t.claim.record.enqueued_at
            if enqueued is not None:
                M.per_model(t.job.model).queue_wait.observe(max(0.0, (now - enqueued).total_seconds()))
        if tasks:
            M.BATCH_JOBS.observe(len(tasks))
        return tasks

    def _prefetch(self) -> list[Task]:
        """In the pool while a batch computes: claim and decode the next one, so the compute thread goes from
        one batch to the next without waiting on Redis or decoders (a 2-core CPU worker spent 4-6% of its wall
        time there, measured). One batch ahead at most."""
        tasks = self._claim(block_s=None)
        for t in tasks:
            self._decode(t)
        return tasks

    def wait_prefetch(self) -> None:
        """Let a prefetch in flight finish (its claims must be on the claim list before a give-back reads it)."""
        if self._prefetched is not None:
            wait([self._prefetched], timeout=30)
            try:
                tasks = self._prefetched.result(timeout=0)
            except Exception:  # Redis down meanwhile: its claims (if any) are found on the claim list
                tasks = []
            self._prefetched = None
            for t in tasks:
                t.decoded = None

    # -- one batch ------------------------------------------------------------------------------------------
    def run(self, tasks: list[Task]) -> None:
        t0 = time.perf_counter()
        self._decode_all(tasks)
        ok = [t for t in tasks if t.error is None]
        self._fail([t for t in tasks if t.error is not None])
        # A full batch says more jobs are likely waiting; after a partial one a prefetch would mostly find none
        # and only add a Redis round trip and a thread hand-off to each lone job.
        if len(ok) >= self.batch_jobs and self._prefetched is None and self.prefetch_allowed:
            self._prefetched = self.pool.submit(self._prefetch)
        groups: dict[tuple[str, int, int | None, float | None], list[Task]] = {}
        for t in ok:
            groups.setdefault(t.job.model_key, []).append(t)
        runs = []
        for (name, scale, pin, realism), group in groups.items():
            try:
                if not self.settings.worker_lazy_load and not self.models.serves(name, scale):
                    raise ModelError("model_not_served", f"this worker does not serve {name} x{scale}")
                up = self.models.engine(name, scale, pin, realism=realism)
            except ModelError as e:
                for t in group:
                    t.error = JobError(code=e.code, message=str(e))
                self._fail(group)
                continue
            runs.append((up, sorted(group, key=_input_pixels)))
        # Fair batching: cheap work first, so a small job never waits for the big ones claimed with it:
        # interpolations before networks, then the group with fewer input pixels; inside one engine call smaller
        # images come first (the engine yields each image as soon as its own tiles are done).
        runs.sort(key=lambda r: (not weightless(r[0]), sum(_input_pixels(t) for t in r[1])))
        for up, group in runs:
            self._run_group(up, group)
        self.batches += 1
        per_job = (time.perf_counter() - t0) / max(1, len(tasks))
        self.seconds_per_job = per_job if self.seconds_per_job is None else 0.8 * self.seconds_per_job + 0.2 * per_job

    def _decode(self, t: Task) -> None:
        """Turn the upload into pixels, or note why it cannot be (failed when its batch runs)."""
        from model.imageio import ImageError, decode

        data, t.claim.upload = t.claim.upload, None
        if data is None or t.error is not None:
            return
        t1 = time.perf_counter()
        try:
            with M.stage_cpu("decode"):
                t.decoded = decode(data, self.settings.max_input_pixels)
            M.DECODE_SECONDS.observe(time.perf_counter() - t1)
        except ImageError as e:
            t.error = JobError(code=e.code, message=str(e))
        except Exception as e:  # a decoder bug must fail this job, not the batch
            log.exception("decoding job %s failed", t.id)
            t.error = JobError(code="corrupt_image", message=f"the image could not be decoded: {e}")

    def _decode_all(self, tasks: list[Task]) -> None:
        """Decode what is not decoded yet: tiny uploads here, the rest in the pool."""

        def small(t: Task) -> bool:
            return t.job.input.width * t.job.input.height <= _INLINE_INPUT_PIXELS

        todo = [t for t in tasks if t.claim.upload is not None]
        futures = [self.pool.submit(self._decode, t) for t in todo if not small(t)]
        for t in todo:
            if small(t):
                self._decode(t)
        wait(futures)

    def _run_group(self, up, ready: list[Task]) -> None:
        batch_at = utcnow()
        for t in ready:  # the engine of this batch is fixed now: record what computes these jobs, and when
            t.claim.record.data = t.job.model_copy(
                update={
                    "model_version": up.model.version_number,
                    "model_sha256": up.model.version,
                    "batch_started_at": batch_at,
                }
            )
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
            with self.lock:  # the heartbeat thread writes it out; no Redis I/O on the compute thread
                self._progress[t.id] = min(0.99, p.image_done / p.image_total)

        t0 = time.perf_counter()
        seen: set[int] = set()
        threads = torch_threads(up, sum(t.decoded.width * t.decoded.height for t in ready))
        try:
            cpu0, outside = time.thread_time(), 0.0  # the engine's share: the loop's CPU less what its body takes
            for i, result in up.upscale_iter([t.decoded.rgb for t in ready], on_progress):
                b0 = time.thread_time()
                seen.add(i)
                self._completed(ready[i], result, model)
                outside += time.thread_time() - b0
            M.ENGINE_CPU.inc(max(0.0, time.thread_time() - cpu0 - outside))
        except Exception as e:  # an engine failure fails the jobs it had not finished, and only those
            log.exception("engine call failed for %d job(s)", len(ready) - len(seen))
            failed = [t for i, t in enumerate(ready) if i not in seen]
            for t in failed:
                t.error = JobError(code="engine_error", message=f"the engine failed: {e}")
            self._fail(failed)
        finally:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
        M.INFERENCE_SECONDS.labels(model).inc(time.perf_counter() - t0)
        M.BATCH_TILES.observe(sum(t.tiles for t in ready))

    def _completed(self, t: Task, result, model: str) -> None:
        """One image out of the engine: failed, or encoded and stored (here if small, else in the pool)."""
        if isinstance(result, Exception):
            code = "image_too_large" if type(result).__name__ == "ImageTooLargeError" else "engine_error"
            t.error = JobError(code=code, message=str(result))
            self._fail([t])
            return
        M.per_model(model).tiles.inc(t.tiles)
        M.count_output(model, result.shape[1], result.shape[2])
        if result.shape[1] * result.shape[2] <= _INLINE_OUTPUT_PIXELS:
            self._finish(t, result)
        else:
            self._encoding.add(self.pool.submit(self._finish, t, result))

    def wait_for_encoders(self, max_pending: int) -> None:
        self._encoding = {f for f in self._encoding if not f.done()}
        while len(self._encoding) > max_pending:
            done, self._encoding = wait(self._encoding, return_when="FIRST_COMPLETED")
            for f in done:
                if f.exception() is not None:  # _finish catches its own errors; this is a bug
                    log.error("finishing a job failed", exc_info=f.exception())

    # -- ending jobs (compute thread or pool) -----------------------------------------------------------------
    def _finish(self, t: Task, sr) -> None:
        from model.imageio import CONTENT_TYPES, encode

        job = t.job
        try:
            t1 = time.perf_counter()
            with M.stage_cpu("encode"):
                data = encode(
                    t.decoded, sr, job.format, job.quality, png_compress_level=self.settings.worker_png_compress_level
                )
            M.ENCODE_SECONDS.observe(time.perf_counter() - t1)
        except Exception as e:
            log.exception("encoding job %s failed", t.id)
            t.error = JobError(code="encode_failed", message=f"the result could not be encoded: {e}")
            self._fail([t])
            return
        t.decoded = None
        output = OutputInfo(
            width=int(sr.shape[2]), height=int(sr.shape[1]), bytes=len(data), content_type=CONTENT_TYPES[job.format]
        )
        self._end([(t, output, data)])

    def _fail(self, tasks: list[Task]) -> None:
        for t in tasks:
            log.warning("job %s failed: %s: %s", t.id, t.error.code, t.error.message)  # type: ignore[union-attr]
            M.JOBS_FAILED.labels(t.job.model, t.error.code).inc()  # type: ignore[union-attr]
        self._end([(t, t.error, None) for t in tasks])  # type: ignore[misc]

    def _end(self, items: list[tuple[Task, OutputInfo | JobError, bytes | None]]) -> None:
        """Commit jobs' ends; kept for later when Redis does not answer."""
        with self.lock:  # after this the heartbeat thread no longer writes these jobs' progress
            items = [it for it in items if not it[0].done]
            for t, _, _ in items:
                t.done = True
                self._progress.pop(t.id, None)
            if not items:
                return
            # One committer at a time: what other threads end meanwhile waits here and goes in its next round
            # trip, so under load the ends of several jobs share one (and no end waits longer than one commit).
            self._to_commit.extend(items)
            if self._committing:
                return
            self._committing = True
        while True:
            with self.lock:
                items, self._to_commit = self._to_commit, []
                if not items:
                    self._committing = False
                    return
            try:
                self._commit(items)
            except redis.RedisError as e:
                log.warning("could not store the end of %d job(s), keeping them until Redis answers: %s", len(items), e)
                with self.lock:
                    self._unstored.extend(items)
            except BaseException:
                with self.lock:  # a bug: what waited for this committer is stored with what an outage kept
                    self._unstored.extend(self._to_commit)
                    self._to_commit, self._committing = [], False
                raise

    def _commit(self, items: list[tuple[Task, OutputInfo | JobError, bytes | None]]) -> None:
        finished = [(t.claim, d, r) for t, d, r in items if isinstance(d, OutputInfo)]
        failed = [(t.claim, d) for t, d, _ in items if isinstance(d, JobError)]
        with M.stage_cpu("store"):
            done = self.store.finish(finished, self.counters_key) + self.store.fail(failed, self.counters_key)
        claims = [c for c, _, _ in finished] + [c for c, _ in failed]
        for c, committed in zip(claims, done, strict=True):
            if not committed:
                log.warning(
                    "job %s is no longer this worker's (requeued as presumed dead, or lost by Redis): "
                    "its end was not recorded",
                    c.id,
                )
        with self.lock:
            for c in claims:
                self.tasks.pop(c.id, None)
        now = utcnow()
        for (c, _, _), committed in zip(finished, done, strict=False):
            if committed:
                _observe_end(c, now)

    def retry_unstored(self) -> int:
        """Store what an outage kept back; raises the Redis error while it lasts. Returns how many were stored."""
        with self.lock:
            items, self._unstored = self._unstored, []
        if not items:
            return 0
        try:
            self._commit(items)
        except redis.RedisError:
            with self.lock:
                self._unstored = items + self._unstored
            raise
        log.info("stored the end of %d job(s) kept during the outage", len(items))
        return len(items)

    # -- for the heartbeat thread ---------------------------------------------------------------------------
    def flush_progress(self) -> None:
        with self.lock:
            values = [(self.tasks[j].claim, v) for j, v in self._progress.items() if j in self.tasks]
            self._progress.clear()
        with M.stage_cpu("progress"):
            self.store.progress(values)

    def busy(self) -> int:
        with self.lock:
            return len(self.tasks)

    def held(self) -> dict[str, str]:
        """Job id -> claim token of every job this worker holds (started, not ended)."""
        with self.lock:
            return {j: t.claim.token for j, t in self.tasks.items()}

    def close(self, cold: bool) -> None:
        self.prefetch_allowed = False
        self.wait_prefetch()
        if not cold:
            self.wait_for_encoders(max_pending=0)
        self.pool.shutdown(wait=not cold, cancel_futures=cold)


def _observe_end(c: Claim, now) -> None:
    rec = c.record
    series = M.per_model(rec.data.model)
    series.finished.inc()
    if rec.started_at is not None:
        series.processing.observe((now - rec.started_at).total_seconds())
    if rec.enqueued_at is not None:
        series.end_to_end.observe((now - rec.enqueued_at).total_seconds())


def _input_pixels(t: Task) -> int:
    return t.decoded.width * t.decoded.height
