"""A training run: ``train(cfg)`` plans it (log and validation intervals that fit the run, warnings when they do
not), sets up distributed training, resumes, loops over steps with a progress bar, logs losses and validation
lines a person can follow, saves checkpoints and sample grids, stops on request with a checkpoint, and exports
servable weights. The step itself is :class:`training.trainer.Trainer`'s.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.config import TrainConfig
from training.data import RandomCrops, StepSampler, make_loader, portable_folder, scan_images
from training.trainer import Trainer

__all__ = ["train", "TrainingStopped", "LOG_POINTS", "run_plan", "val_line"]

log = logging.getLogger(__name__)

LOG_POINTS = 10  # a run logs its losses at least this often (a short run's plot has points)


def run_plan(cfg: TrainConfig, start_step: int = 0) -> tuple[int, list[str]]:
    """(the logging interval this run uses, warnings about settings that do not fit its length).

    The loss log is every ``log_every`` steps, but at least :data:`LOG_POINTS` times in the steps left, so a
    short run's curves have points; warm-up, logging and validation intervals longer than the run are named.
    """
    left = max(1, cfg.steps - start_step)
    log_every = max(1, min(cfg.log_every, left // LOG_POINTS))
    notes = []
    if log_every != cfg.log_every:
        notes.append(
            f"logging every {cfg.log_every} steps would give {left // cfg.log_every} point(s) in this "
            f"{left}-step run: logging every {log_every} instead"
        )
    if cfg.warmup_steps >= cfg.steps:
        notes.append(
            f"the warm-up ({cfg.warmup_steps} steps) is as long as the run ({cfg.steps}): the learning rate "
            f"never reaches {cfg.lr:g} (--set warmup_steps=N)"
        )
    if cfg.val and cfg.val_every > left:
        notes.append(f"validation every {cfg.val_every} steps exceeds the run: it runs once, at step {cfg.steps}")
    if not cfg.val:
        notes.append("no --val folders: no validation PSNR (pass --val DIR of HR images)")
    return log_every, notes


def val_line(step: int, total: int, val: dict[str, dict[str, Any]]) -> str:
    """One terminal line of a validation: PSNR/SSIM per folder, with detail, grid and colour when measured."""
    parts = []
    for name, m in val.items():
        text = f"{name} PSNR-Y {m['psnr_y']:.2f} dB SSIM-Y {m['ssim_y']:.4f}"
        if "lattice_ratio" in m:
            rgb = "/".join(f"{c:+.1f}" for c in m["colour_error"])
            text += f" HF {m['hf_ratio']:.2f} lattice {m['lattice_ratio']:.2f}x HR colour {rgb}"
        parts.append(text)
    return f"step {step}/{total} validation: " + "; ".join(parts)


def _setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class TrainingStopped(RuntimeError):
    """The run was asked to stop (``should_stop``) or interrupted; a checkpoint of the last step was saved."""


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path | None:
    """Run a whole training stage; returns the exported weights on rank 0.

    ``on_event(kind, data)`` hears "log" (loss rows), "val" (validation and sample grid), "checkpoint" and
    "exported"; ``should_stop()`` is asked after every step, and a True answer (or Ctrl-C) saves a checkpoint
    and raises :class:`TrainingStopped`, so a later ``resume`` continues exactly.
    """
    from tqdm import tqdm

    rank, world = _setup_distributed()
    trainer = Trainer(cfg, rank=rank, world=world)
    out = trainer.out
    paths, skipped = scan_images(cfg.data, cfg.crop)
    data_summary = {
        "folders": [portable_folder(f) for f in cfg.data],
        "images": len(paths),
        "skipped_smaller_than_crop": skipped,
    }
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log.info(
            "%d training images (%d skipped: smaller than %d px) on %s, amp %s",
            len(paths),
            skipped,
            cfg.crop,
            trainer.device,
            trainer.amp,
        )
    if resume and not trainer.resume():
        log.warning("--resume: no checkpoint in %s; starting from step 0", trainer.checkpoint_dir())
    if world > 1:  # every rank continues from the checkpoint rank 0 sees
        dist.barrier()
    trainer.log_every, notes = run_plan(cfg, trainer.step)
    if trainer.is_main:
        for note in notes:
            log.warning("%s", note)

    dataset = RandomCrops(paths, cfg.crop, seed=cfg.seed, cache=cfg.cache_images)
    loader = make_loader(
        dataset,
        StepSampler(trainer.step, cfg.steps, cfg.batch_size, rank, world),
        cfg.workers,
        pin=trainer.device.type == "cuda",
    )
    metrics_file = (out / "metrics.jsonl").open("a") if trainer.is_main else None
    bar = tqdm(
        total=cfg.steps,
        initial=trainer.step,
        disable=not (trainer.is_main and cfg.progress),
        desc=cfg.name,
        dynamic_ncols=True,
    )
    run_start, seconds_before, start_step = time.perf_counter(), trainer.train_seconds, trainer.step
    calibrated = not cfg.time_limit

    def write(row: dict[str, Any]) -> None:
        if metrics_file:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()

    def emit(kind: str, data: dict[str, Any]) -> None:
        if on_event is not None and trainer.is_main:
            on_event(kind, data)

    try:
        _loop(trainer, cfg, loader, bar, write, emit, should_stop, run_start, seconds_before, start_step, calibrated)
    except (KeyboardInterrupt, TrainingStopped) as e:
        path = trainer.save_checkpoint()
        bar.close()
        log.warning("stopped at step %d; checkpoint %s; continue with --resume", trainer.step, path)
        raise TrainingStopped(f"stopped at step {trainer.step}") from e
    finally:
        if metrics_file:
            metrics_file.close()
    bar.close()
    if world > 1:
        dist.barrier()
    if not trainer.is_main:
        return None
    path = trainer.export(data_summary)
    try:
        from training.plots import plot_curves

        plot_curves(out / "metrics.jsonl", out / "curves.png")
    except ImportError:
        log.warning("matplotlib is not installed: no loss/PSNR plot")
    log.info("exported %s", path)
    emit("exported", {"path": str(path), "step": trainer.step})
    return path


def _loop(
    trainer: Trainer,
    cfg: TrainConfig,
    loader,
    bar,
    write,
    emit,
    should_stop,
    run_start: float,
    seconds_before: float,
    start_step: int,
    calibrated: bool,
) -> None:
    window_start, window_steps = time.perf_counter(), 0
    sums: dict[str, torch.Tensor] = {}
    out = trainer.out
    for hr_u8 in loader:
        if trainer.step >= trainer.total_steps:
            break
        losses = trainer.train_step(hr_u8)
        trainer.train_seconds = seconds_before + time.perf_counter() - run_start
        window_steps += 1
        for k, v in losses.items():
            sums[k] = sums[k] + v if k in sums else v.clone()
        step = trainer.step
        if step % trainer.log_every == 0 or step == trainer.total_steps:
            elapsed = time.perf_counter() - window_start
            if not calibrated and step > start_step + trainer.log_every:
                # Fix the schedule's length from the measured speed (after the first, warm-up window) so the
                # cosine decay ends at the time limit.
                remaining = max(0.0, cfg.time_limit - trainer.train_seconds)
                trainer.total_steps = min(cfg.steps, step + int(window_steps / elapsed * remaining))
                bar.total = trainer.total_steps
                calibrated = True
                log.info(
                    "time limit %.0f s at %.1f steps/s: training %d steps",
                    cfg.time_limit,
                    window_steps / elapsed,
                    trainer.total_steps,
                )
            row = {
                "step": step,
                "lr": trainer.opt_g.param_groups[0]["lr"],
                "it_s": round(window_steps / max(elapsed, 1e-9), 3),
                "seconds": round(trainer.train_seconds, 1),
                **{k: v.item() / window_steps for k, v in sums.items()},
            }
            write(row)
            emit("log", {**row, "total_steps": trainer.total_steps})
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "seconds")})
            sums, window_steps, window_start = {}, 0, time.perf_counter()
        bar.update(1)
        last = step >= trainer.total_steps
        if trainer.is_main and cfg.val and (step % cfg.val_every == 0 or last):
            val = trainer.evaluate(cfg.val, cfg.val_max_images)
            write({"step": step, "val": val})
            grid = _save_grid(trainer, cfg.val[0], out / "samples" / f"step_{step:08d}.png")
            emit("val", {"step": step, "val": val, "samples": str(grid)})
            line = val_line(step, trainer.total_steps, val)
            if cfg.progress:  # on the terminal, above the bar
                bar.write(line, file=sys.stderr)
            log.info("%s", line)
        if step % cfg.ckpt_every == 0 or last:
            emit("checkpoint", {"step": step, "path": str(trainer.save_checkpoint())})
        if last:
            break
        if should_stop is not None and should_stop():
            raise TrainingStopped("asked to stop")


def _save_grid(trainer: Trainer, folder: str, path: Path) -> Path:
    from training.plots import sample_grid

    return sample_grid(trainer.loaded_model(), folder, path, device=trainer.device)
