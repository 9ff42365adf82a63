"""``srgan worker``: one batching worker process (settings from ``SRGAN_*``, a few overridable here)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run one batching worker (or, with --queue training, a training worker)",
        description="Run one worker: loads its models once, takes up to N queued jobs at a time "
        "and batches their tiles through the engine. With --queue set to the training "
        "queue (SRGAN_TRAINING_QUEUE, `training`) it is a training worker instead: it "
        "runs the training runs posted to /v1/training-runs, one at a time. Settings "
        "come from SRGAN_* environment variables (see app/SETTINGS.md); options here "
        "override them.",
    )
    p.add_argument("--queue", help="rq queue to drain (SRGAN_QUEUE); the training queue makes a training worker")
    p.add_argument(
        "--model", nargs="+", metavar="NAME", help="models to load at start, NAME or NAME_xSCALE (SRGAN_WORKER_MODELS)"
    )
    p.add_argument("--redis-url", help="SRGAN_REDIS_URL")
    p.add_argument("--batch-jobs", type=int, help="most jobs taken at once (SRGAN_WORKER_BATCH_JOBS)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (SRGAN_WORKER_DEVICE)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 for none (SRGAN_WORKER_METRICS_PORT)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument(
        "--alive",
        action="store_true",
        help="run no worker: exit 0 if the worker on this host has a fresh heartbeat (or Redis does not answer), "
        "1 if not (the container's liveness probe; see worker/health.py)",
    )
    p.set_defaults(func=cmd_worker)


def settings_from_args(args: argparse.Namespace):
    from worker.settings import ServiceSettings as Settings

    overrides = {
        k: v
        for k, v in {
            "queue": args.queue,
            "worker_models": args.model,
            "redis_url": args.redis_url,
            "worker_batch_jobs": args.batch_jobs,
            "worker_device": args.device,
            "worker_metrics_port": args.metrics_port,
        }.items()
        if v is not None
    }
    return Settings(**overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging
    import os

    # Before torch (and its OpenMP) loads: idle OpenMP threads sleep instead of spinning. On a CPU shared with the
    # gateway, Redis and clients, spinning threads took the CPU the others needed (measured on this 2-core box,
    # loaded: a small bicubic job 60-90 ms of CPU with spinning, 8 ms without; SRResNet x4 on 8 photos 5.9-6.0 s
    # of CPU instead of 3.5-3.8 s, wall time within noise). An explicit OMP_WAIT_POLICY is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from worker.service import run_worker

    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # a service logs what it does
    settings = settings_from_args(args)
    if args.alive:
        from worker.health import exit_status, heartbeat_state

        state = heartbeat_state(settings)
        print(f"worker heartbeat on queue {settings.queue!r}: {state}")
        return exit_status(state)
    if settings.queue == settings.training_queue:
        from worker.training import run_training_worker

        return run_training_worker(settings, burst=args.burst)
    return run_worker(settings, burst=args.burst)
