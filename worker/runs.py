"""Training runs from the API: their bookkeeping, shared by the gateway and the training worker
(``worker/training.py``).

A run is a job on the training queue (``Settings.training_queue``) of the job store (``worker/jobs.py``), so
``rq info`` shows it; its document is a :class:`~worker.records.TrainingRun` (what was asked, the latest step,
losses, validation and sample grid, the registered version once finished). The gateway checks the request and
enqueues it (:func:`enqueue_run`); a training worker (``srgan worker --queue training``) takes one run at a time
and calls ``training.loop.train`` in its own process.

A finished run registers its exported weights as a new version (source ``trained``) whatever its gate score;
with ``auto_promote`` it is promoted only if it passed the gate. ``DELETE`` cancels a queued run at once and a
running one at its next step (a key the worker looks at); SIGTERM stops a run at a checkpoint and puts it back
on the queue, and the next attempt resumes from that checkpoint, as does the retry of a run whose worker died.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.jobs import JobStore
from worker.records import JobRecord, TrainingRun

__all__ = ["enqueue_run", "cancel_key", "runs_dir", "build_config", "FORBIDDEN_OVERRIDES"]

# Config fields that the request sets through its own fields, or that the worker owns.
FORBIDDEN_OVERRIDES = frozenset({"stage", "data", "val", "out", "name", "scale", "init", "progress", "steps"})


def runs_dir(settings) -> Path:
    from model.registry import models_dir

    return Path(settings.training_runs_dir) if settings.training_runs_dir else models_dir().parent / "training-runs"


def cancel_key(settings, run_id: str) -> str:
    return f"{settings.key_prefix}:training-cancel:{run_id}"


def enqueue_run(store: JobStore, *, model: str, scale: int, request: dict[str, Any]) -> JobRecord:
    """Queue a checked training request on the training queue's store; returns its record (its id is the run
    id)."""
    doc = TrainingRun(model=model, scale=scale, stage=request["stage"], request=request,
                      total_steps=request.get("steps"))  # fmt: skip
    return store.enqueue(doc)[0]


def build_config(request: dict[str, Any], *, model: str, scale: int, out: Path | None, registry=None):
    """The run's ``TrainConfig``: the stage's defaults, the recipe, the overrides, then the request's own fields.
    With a ``registry``, ``init`` (``active``, ``NAME`` or ``NAME@VERSION``) becomes the weights file it names."""
    from training.config import load_config

    overrides = dict(request.get("overrides") or {})
    bad = sorted(set(overrides) & FORBIDDEN_OVERRIDES)
    if bad:
        raise ValueError(
            f"overrides may not set {', '.join(bad)}: use the request's own fields (the worker "
            "chooses the output folder)"
        )
    overrides.update(data=request["data"], name=model, scale=scale, progress=False)
    if request.get("val") is not None:
        overrides["val"] = request["val"]
    if request.get("steps"):
        overrides["steps"] = request["steps"]
    if out is not None:
        overrides["out"] = str(out)
    init = (request.get("init") or "").strip()
    if not init and request["stage"] == "srgan":
        init = "srresnet"  # stage 2 starts from the active SRResNet, as the paper's recipe does
    if init and init != "scratch" and registry is not None:
        name, _, pin = init.partition("@")
        name = model if name == "active" else name
        overrides["init"] = str(registry.resolve(name, scale, pin or None).path)
    elif init == "scratch":
        overrides["init"] = "scratch" if request["stage"] == "srgan" else ""
    return load_config(request["stage"], request.get("recipe") or None, overrides)
