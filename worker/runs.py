"""Training runs from the API: their bookkeeping, shared by the gateway and the training worker
(``worker/training.py``).

A run is an rq job on the ``Settings.training_queue`` queue (``training``), so ``rq info`` shows it. The gateway
checks the request and enqueues it (:func:`enqueue_run`); a training worker (``srgan worker --queue training``,
 ``worker.training.TrainingWorker``) takes one run at a time and calls ``training.trainer.train`` in its own process. The
run's fields live in the job's ``meta``:

=================  =======================================================================================
``kind``           ``"training"``; ``model``, ``scale``: the series the run makes a version of
``request``        what was asked: stage, data, val, recipe, steps, overrides, init, auto_promote, by
``step``           last logged step; ``total_steps``; ``progress`` 0..1; ``losses``, ``lr``, ``it_s``: the
                   latest log row; ``val``: latest validation (PSNR-Y/SSIM-Y per folder), ``val_step``
``samples_step``   step of the latest sample grid (the PNG is in the storage, kind ``samples``)
``out``            the run's folder on the training worker (checkpoints, metrics.jsonl, samples, export)
``output``         once finished: ``{version, sha256, gate, promoted, promote_reason}``
``error``          ``{code, message}`` once failed
=================  =======================================================================================

A finished run registers its exported weights as a new version (source ``trained``) whatever its gate score;
with ``auto_promote`` it is promoted only if it passed the gate. ``DELETE`` cancels a queued run at once and a
running one at its next step (a key the worker looks at); SIGTERM stops a run at a checkpoint and puts it back
on the queue, and the next attempt resumes from that checkpoint, as does the retry of a run whose worker died.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker import jobs as J

__all__ = [
    "TRAINING_FUNC",
    "training_job",
    "enqueue_run",
    "cancel_key",
    "stage_arch",
    "runs_dir",
    "build_config",
    "FORBIDDEN_OVERRIDES",
]

TRAINING_FUNC = "worker.runs.training_job"
# Config fields that the request sets through its own fields, or that the worker owns.
FORBIDDEN_OVERRIDES = frozenset({"stage", "data", "val", "out", "name", "scale", "init", "progress", "steps"})


def training_job(**_: Any) -> None:
    """The function reference of every training run: runs are taken by ``srgan worker --queue training``."""
    raise RuntimeError("srgan training runs are run by `srgan worker --queue training`, not by a plain rq worker")


def stage_arch(stage: str) -> str:
    """The architecture a stage trains (the srgan stage trains an SRResNet generator)."""
    return {"srresnet": "srresnet", "srgan": "srresnet", "espcn": "espcn", "srcnn": "srcnn"}[stage]


def runs_dir(settings) -> Path:
    from model.registry import models_dir

    return Path(settings.training_runs_dir) if settings.training_runs_dir else models_dir().parent / "training-runs"


def cancel_key(settings, run_id: str) -> str:
    return f"{settings.key_prefix}:training-cancel:{run_id}"


def enqueue_run(queue, settings, *, model: str, scale: int, request: dict[str, Any]):
    """Queue a checked training request; returns the rq job (its id is the run id)."""
    run_id = J.new_job_id()
    meta = {
        "kind": "training",
        "model": model,
        "scale": scale,
        "stage": request["stage"],
        "request": request,
        "attempts": 0,
        "progress": 0.0,
        "step": 0,
        "total_steps": request.get("steps"),
    }
    job = queue.create_job(
        TRAINING_FUNC,
        job_id=run_id,
        meta=meta,
        result_ttl=settings.training_result_ttl_s,
        failure_ttl=settings.training_result_ttl_s,
        timeout=-1,
        description=f"train {request['stage']} -> {model} x{scale}",
    )
    queue.enqueue_job(job)
    return job


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
