"""The training worker: ``srgan worker --queue training`` runs the API's training runs (``worker/runs.py``),
one at a time, in its own process."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from worker import metrics as M
from worker.runs import build_config, cancel_key, runs_dir
from worker.service import BatchWorker, _Task

__all__ = ["TrainingWorker", "run_training_worker"]

log = logging.getLogger(__name__)

_CANCEL_CHECK_S = 0.5  # how often a running run looks whether it was canceled


class TrainingWorker(BatchWorker):
    """Takes training runs off the training queue one at a time and trains in this process.

    It is a :class:`BatchWorker` that serves no model: the same claims, heartbeats, dead-worker recovery and
    clean shutdown, with a run as its one-job batch.
    """

    def __init__(self, settings, *, name: str | None = None, connection=None):
        super().__init__(settings, models=[], name=name, connection=connection)
        self.batch_jobs = 1
        self.result_ttl_s = settings.training_result_ttl_s
        self.runs_dir = runs_dir(settings)

    def _start_watcher(self) -> None:
        pass  # serves no model

    def _run_batch(self, tasks: list[_Task]) -> None:
        for t in tasks:
            self._run(t)

    # -- one run -----------------------------------------------------------------------------------------
    def _update(self, t: _Task, **fields: Any) -> None:
        """Change the run's meta; the heartbeat thread writes it out within ``progress_interval_s``."""
        with self._lock:
            t.job.meta.update(fields)
            self._dirty_progress[t.id] = float(t.job.meta.get("progress") or 0.0)

    def _run(self, t: _Task) -> None:
        from model.registry import RegistryError
        from model.zoo import NoWeightsError, UnknownModelError
        from training.trainer import TrainingStopped, train

        meta = t.job.meta
        model, scale, request = meta["model"], int(meta["scale"]), meta["request"]
        out = self.runs_dir / t.id
        try:
            cfg = build_config(request, model=model, scale=scale, out=out, registry=self.registry)
            if not cfg.val:
                cfg.val = [str(self.registry.gate_dir)]  # something to show progress on: the gate set
        except (ValueError, FileNotFoundError, LookupError, RegistryError) as e:
            self._fail(t, "invalid_training_run", str(e))
            M.TRAINING_RUNS.labels("failed").inc()
            return
        self._update(t, out=str(out), total_steps=cfg.steps, init=cfg.init or None)
        resume = (out / "checkpoints").is_dir()
        log.info(
            "run %s: %s -> %s x%d, %d steps%s",
            t.id,
            cfg.stage,
            model,
            scale,
            cfg.steps,
            " (resuming)" if resume else "",
        )
        canceled = {"value": False, "checked": 0.0}

        def should_stop() -> bool:
            now = time.monotonic()
            if now - canceled["checked"] >= _CANCEL_CHECK_S:
                canceled["checked"] = now
                canceled["value"] = bool(self.connection.exists(cancel_key(self.settings, t.id)))
            return canceled["value"] or self._stop_requested

        try:
            path = train(
                cfg, resume=resume, on_event=lambda kind, data: self._on_event(t, kind, data), should_stop=should_stop
            )
        except TrainingStopped:
            M.TRAINING_STEP.set(0)
            if canceled["value"]:
                log.info("run %s: canceled at step %s", t.id, meta.get("step"))
                self._end(t, ok=False, canceled=True)
                M.TRAINING_RUNS.labels("canceled").inc()
            else:  # SIGTERM: left claimed, so the shutdown puts it back on the queue; the next attempt resumes
                log.info("run %s: stopped at a checkpoint; it goes back on the queue", t.id)
                M.TRAINING_RUNS.labels("requeued").inc()
            return
        except Exception as e:  # the data, the recipe or the trainer: the run fails, the worker goes on
            log.exception("run %s failed", t.id)
            M.TRAINING_STEP.set(0)
            code = "data_not_found" if isinstance(e, FileNotFoundError) else "training_failed"
            self._fail(t, code, f"{type(e).__name__}: {e}")
            M.TRAINING_RUNS.labels("failed").inc()
            return
        M.TRAINING_STEP.set(0)
        by = f"training run {t.id}"
        try:
            try:
                rec = self.registry.register(
                    model, path, source="trained", by=request.get("by") or by, run=t.id, notes=f"trained by run {t.id}"
                )
            except RegistryError as e:
                if e.code != "already_registered":
                    raise
                rec = self.registry.version(model, scale, e.details["version"])
            promoted, reason = False, None
            if request.get("auto_promote"):
                if rec.gate and rec.gate.get("passed"):
                    self.registry.promote(model, scale, rec.version, by=request.get("by") or by)
                    promoted = True
                else:
                    reason = ("below the quality gate: " + _gate_summary(rec.gate)) if rec.gate else "not scored"
        except (RegistryError, UnknownModelError, NoWeightsError) as e:
            self._fail(t, "registration_failed", f"the run's weights ({path}) could not be registered: {e}")
            M.TRAINING_RUNS.labels("failed").inc()
            return
        t.model_version, t.model_sha256 = rec.version, rec.sha256
        self._end(
            t,
            ok=True,
            output={
                "version": rec.version,
                "sha256": rec.sha256,
                "gate": rec.gate,
                "promoted": promoted,
                "promote_reason": reason,
                "weights": str(rec.path),
            },
        )
        M.TRAINING_RUNS.labels("finished").inc()
        log.info(
            "run %s: registered %s x%d version %d%s",
            t.id,
            model,
            scale,
            rec.version,
            " and promoted it" if promoted else "",
        )

    def _on_event(self, t: _Task, kind: str, data: dict[str, Any]) -> None:
        if kind == "log":
            total = int(data.get("total_steps") or t.job.meta.get("total_steps") or 0)
            step = int(data["step"])
            losses = {
                k: round(float(v), 6)
                for k, v in data.items()
                if k not in ("step", "lr", "it_s", "seconds", "total_steps")
            }
            self._update(
                t,
                step=step,
                total_steps=total,
                progress=min(0.99, step / total) if total else 0.0,
                losses=losses,
                lr=data.get("lr"),
                it_s=data.get("it_s"),
                seconds=data.get("seconds"),
            )
            M.TRAINING_STEP.set(step)
        elif kind == "val":
            self._update(t, val=data.get("val"), val_step=data.get("step"))
            grid = data.get("samples")
            if grid:
                try:
                    self.storage.put("samples", t.id, Path(grid).read_bytes(), self.result_ttl_s)
                    self._update(t, samples_step=data.get("step"))
                except OSError as e:
                    log.warning("run %s: could not store the sample grid %s: %s", t.id, grid, e)
        elif kind == "checkpoint":
            self._update(t, checkpoint_step=data.get("step"))


def _gate_summary(gate: dict[str, Any]) -> str:
    return (
        f"PSNR-Y {gate['psnr_y']:.3f} dB vs {gate['baseline']} {gate['baseline_psnr_y']:.3f} dB "
        f"(tolerance {gate['tolerance_db']} dB)"
    )


def run_training_worker(settings, *, burst: bool = False) -> int:
    """``srgan worker --queue training``."""
    w = TrainingWorker(settings)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port)
        log.info("training worker metrics on :%d/metrics", settings.worker_metrics_port)
    w.work(burst=burst)
    return 0
