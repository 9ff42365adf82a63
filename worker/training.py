"""The training worker: ``srgan worker --queue training`` runs the API's training runs (``worker/runs.py``), one at
a time, in its own process.

It is the same worker process as an upscale worker (``worker/process.py``: claims, heartbeats, dead-worker
recovery, clean shutdown, surviving Redis outages) with a different body: a run is its one-job batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from worker import metrics as M
from worker.jobs import Claim, JobStore
from worker.presence import Presence
from worker.process import WorkerProcess
from worker.records import JobError, ServedModel, TrainingOutput, TrainingRun
from worker.retry import REDIS_DOWN
from worker.runs import build_config, cancel_key, runs_dir
from worker.storage import make_storage

__all__ = ["TrainingWorker", "run_training_worker"]

log = logging.getLogger(__name__)

_CANCEL_CHECK_S = 0.5  # how often a running run looks whether it was canceled


class TrainingWorker:
    """Takes training runs off the training queue one at a time and trains in this process."""

    seconds_per_job = None

    def __init__(self, settings, *, name: str | None = None, connection=None):
        from worker.registry import open_registry

        conn = connection if connection is not None else settings.redis(name="srgan-training-worker")
        self.settings = settings
        self.storage = make_storage(settings, conn)
        self.store = JobStore.for_queue(settings, conn, self.storage, training=True)
        self.presence = Presence(self.store, name, dead_after_s=settings.worker_dead_after_s)
        self.name = self.presence.name
        self.registry = open_registry(settings, conn)
        self.runs_dir = runs_dir(settings)
        self.process = WorkerProcess(settings, self.store, self.presence, self)
        self._lock = threading.Lock()
        self._current: Claim | None = None
        self._dirty = False
        self._unstored: list[tuple[Claim, str, Any]] = []
        self.batches = 0

    def work(self, burst: bool = False) -> bool:
        return self.process.work(burst)

    # -- the process's body -----------------------------------------------------------------------------------
    def load(self) -> None:
        pass

    def start(self) -> None:
        pass

    def next_batch(self, block_s: float | None) -> list[Claim]:
        claims = self.store.claim(self.name, 1, block_s)
        with self._lock:
            self._current = claims[0] if claims else None
        return claims

    def run(self, claims: list[Claim]) -> None:
        for c in claims:
            self._run(c)
        self.batches += 1

    def between_batches(self):
        return contextlib.nullcontext()

    def retry_unstored(self) -> int:
        with self._lock:
            items, self._unstored = self._unstored, []
        for i, (c, how, detail) in enumerate(items):
            try:
                self._commit(c, how, detail)
            except REDIS_DOWN:
                with self._lock:
                    self._unstored = items[i:] + self._unstored
                raise
        return len(items)

    def flush_progress(self) -> None:
        with self._lock:
            c, dirty, self._dirty = self._current, self._dirty, False
        if c is not None and dirty:
            self.store.save(c)

    def busy(self) -> int:
        return int(self._current is not None)

    def held(self) -> dict[str, str]:
        with self._lock:
            return {self._current.id: self._current.token} if self._current is not None else {}

    def served(self) -> list[ServedModel]:
        return []

    def device(self):
        return None  # the trainer picks its own device per run

    def close(self, cold: bool) -> None:
        pass

    # -- one run ----------------------------------------------------------------------------------------------
    def _update(self, c: Claim, **fields: Any) -> None:
        """Change the run's document; the heartbeat thread writes it out within ``progress_interval_s``."""
        with self._lock:
            c.record.data = c.record.data.model_copy(update=fields)
            if "progress" in fields:
                c.record.progress = fields["progress"]
            self._dirty = True

    def _end(self, c: Claim, how: str, detail: Any = None) -> None:
        """Finish, fail or cancel the run; kept for later when Redis does not answer."""
        with self._lock:
            self._current = None
        try:
            self._commit(c, how, detail)
        except REDIS_DOWN as e:
            log.warning("run %s: could not store its end, keeping it until Redis answers: %s", c.id, e)
            with self._lock:
                self._unstored.append((c, how, detail))

    def _commit(self, c: Claim, how: str, detail: Any) -> None:
        key = self.presence.counters_key
        if how == "finished":
            self.store.finish([(c, detail, None)], key)
        elif how == "canceled":
            self.store.end_canceled([c])
        else:
            self.store.fail([(c, detail)], key)
        M.TRAINING_RUNS.labels(how).inc()

    def _fail(self, c: Claim, code: str, message: str) -> None:
        self._end(c, "failed", JobError(code=code, message=message))

    def _run(self, c: Claim) -> None:
        from model.registry import RegistryError
        from model.specs import NoWeightsError, UnknownModelError
        from training.loop import TrainingStopped, train

        run: TrainingRun = c.record.data  # type: ignore[assignment]
        out = self.runs_dir / c.id
        try:
            cfg = build_config(run.request, model=run.model, scale=run.scale, out=out, registry=self.registry)
            if not cfg.val:
                cfg.val = [str(self.registry.gate_dir)]  # something to show progress on: the gate set
        except (ValueError, FileNotFoundError, LookupError, RegistryError) as e:
            self._fail(c, "invalid_training_run", str(e))
            return
        self._update(c, out=str(out), total_steps=cfg.steps, init=cfg.init or None)
        resume = (out / "checkpoints").is_dir()
        log.info("run %s: %s -> %s x%d, %d steps%s", c.id, cfg.stage, run.model, run.scale, cfg.steps,
                 " (resuming)" if resume else "")  # fmt: skip
        canceled: dict[str, Any] = {"value": False, "checked": 0.0}

        def should_stop() -> bool:
            now = time.monotonic()
            if now - canceled["checked"] >= _CANCEL_CHECK_S:
                canceled["checked"] = now
                try:
                    canceled["value"] = bool(self.store.conn.exists(cancel_key(self.settings, c.id)))
                except REDIS_DOWN:
                    pass  # train on through an outage; the cancel is seen once Redis answers
            return bool(canceled["value"]) or self.process.stop_requested

        try:
            path = train(cfg, resume=resume, on_event=lambda kind, data: self._on_event(c, kind, data),
                         should_stop=should_stop)  # fmt: skip
        except TrainingStopped:
            M.TRAINING_STEP.set(0)
            if canceled["value"]:
                log.info("run %s: canceled at step %s", c.id, c.record.data.step)  # type: ignore[union-attr]
                self._end(c, "canceled")
            else:  # SIGTERM: left claimed, so the shutdown puts it back on the queue; the next attempt resumes
                log.info("run %s: stopped at a checkpoint; it goes back on the queue", c.id)
                M.TRAINING_RUNS.labels("requeued").inc()
            return
        except Exception as e:  # the data, the recipe or the trainer: the run fails, the worker goes on
            log.exception("run %s failed", c.id)
            M.TRAINING_STEP.set(0)
            code = "data_not_found" if isinstance(e, FileNotFoundError) else "training_failed"
            self._fail(c, code, f"{type(e).__name__}: {e}")
            return
        M.TRAINING_STEP.set(0)
        if path is None:  # only a distributed run's other ranks export nothing
            self._fail(c, "training_failed", "the run exported no weights")
            return
        try:
            output = self._register(c, run, path)
        except (RegistryError, UnknownModelError, NoWeightsError) as e:
            self._fail(c, "registration_failed", f"the run's weights ({path}) could not be registered: {e}")
            return
        self._end(c, "finished", output)
        log.info("run %s: registered %s x%d version %d%s", c.id, run.model, run.scale, output.version,
                 " and promoted it" if output.promoted else "")  # fmt: skip

    def _register(self, c: Claim, run: TrainingRun, path: Path) -> TrainingOutput:
        from model.registry import RegistryError, gate_text

        by = run.request.get("by") or f"training run {c.id}"
        try:
            rec = self.registry.register(run.model, path, source="trained", by=by, run=c.id,
                                         notes=f"trained by run {c.id}")  # fmt: skip
        except RegistryError as e:
            if e.code != "already_registered":
                raise
            rec = self.registry.version(run.model, run.scale, e.details["version"])
        promoted, reason = False, None
        if run.request.get("auto_promote"):
            if rec.gate and rec.gate.get("passed"):
                self.registry.promote(run.model, run.scale, rec.version, by=by)
                promoted = True
            else:
                reason = ("below the quality gate: " + gate_text(rec.gate)) if rec.gate else "not scored"
        return TrainingOutput(version=rec.version, sha256=rec.sha256, gate=rec.gate, promoted=promoted,
                              promote_reason=reason, weights=str(rec.path))  # fmt: skip

    def _on_event(self, c: Claim, kind: str, data: dict[str, Any]) -> None:
        run: TrainingRun = c.record.data  # type: ignore[assignment]
        if kind == "log":
            total = int(data.get("total_steps") or run.total_steps or 0)
            step = int(data["step"])
            skip = ("step", "lr", "it_s", "seconds", "total_steps")
            losses = {k: round(float(v), 6) for k, v in data.items() if k not in skip}
            self._update(c, step=step, total_steps=total, progress=min(0.99, step / total) if total else 0.0,
                         losses=losses, lr=data.get("lr"), it_s=data.get("it_s"), seconds=data.get("seconds"))  # fmt: skip
            M.TRAINING_STEP.set(step)
        elif kind == "val":
            self._update(c, val=data.get("val"), val_step=data.get("step"))
            grid = data.get("samples")
            if grid:
                try:
                    ttl = self.settings.training_result_ttl_s
                    self.storage.put("samples", c.id, Path(grid).read_bytes(), ttl)
                    self._update(c, samples_step=data.get("step"))
                except OSError as e:
                    log.warning("run %s: could not read the sample grid %s: %s", c.id, grid, e)
                except REDIS_DOWN as e:
                    log.warning("run %s: could not store the sample grid %s: %s", c.id, grid, e)
        elif kind == "checkpoint":
            self._update(c, checkpoint_step=data.get("step"))


def run_training_worker(settings, *, burst: bool = False) -> int:
    """``srgan worker --queue training``."""
    w = TrainingWorker(settings)
    M.serve_metrics(settings.worker_metrics_port, "training worker")
    w.work(burst=burst)
    return 0
