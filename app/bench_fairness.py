"""``srgan bench service --mode fairness``: the latency of a tiny ``bicubic`` job claimed in one batch with two
large SRResNet jobs (issue: a tiny job "done in 47 s" had waited for the big ones of its batch).

It starts its own stack (one worker, batches of 3). Each round submits a large job that occupies the worker,
waits until it has started, then submits two more large jobs and the tiny one: the worker claims those three
together when it is free. Reported: the tiny job's latency (submit to result bytes) and the large jobs', per
round and their medians. Part of the tiny job's latency is the wait for the batch ahead (the blocker): a batch
that computes is not interrupted. ``--code DIR`` runs the stack from another checkout (before vs. after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

__all__ = ["run_fairness_bench"]


def _round(url: str, large: bytes, tiny: bytes) -> dict:
    from app.client import Client

    out: dict[str, list[float]] = {"tiny_s": [], "large_s": []}
    lock = threading.Lock()

    def one(data: bytes, model: str, key: str, started: threading.Event | None = None) -> None:
        with Client(url, timeout=600) as c:
            t = time.perf_counter()
            job = c.submit(data, model=model, format="png")
            if started is not None:  # the blocker: tell the others once the worker has it
                while c.job(job.id).status == "queued":
                    time.sleep(0.02)
                started.set()
            c.result(job, wait=600)
            with lock:
                out[key].append(time.perf_counter() - t)

    started = threading.Event()
    blocker = threading.Thread(target=one, args=(large, "srresnet", "blocker_s", started))
    out["blocker_s"] = []
    blocker.start()
    started.wait(600)
    threads = [threading.Thread(target=one, args=(large, "srresnet", "large_s")) for _ in range(2)]
    threads.append(threading.Thread(target=one, args=(tiny, "bicubic", "tiny_s")))
    for t in threads:
        t.start()
        time.sleep(0.05)  # in this order: the tiny job is queued last
    for t in [*threads, blocker]:
        t.join()
    return out


def run_fairness_bench(args: argparse.Namespace, log=print) -> dict:
    from app.bench_overhead import overhead_images
    from app.bench_service import bench_stack, load_images

    size = args.size if args.size else 192
    large = load_images(args.data, 1, size)[0]
    tiny = overhead_images(1, 32, 32, args.data)[0]
    code = Path(args.code).resolve() if args.code else None
    env = {"PYTHONPATH": str(code)} if code else None
    stack = bench_stack(["srresnet", "bicubic"], args.batch_jobs or 3, env, cwd=code)
    log(
        f"fairness: a 32x32 bicubic job queued behind two {size}x{size} srresnet jobs in one batch of 3, "
        f"{args.rounds} round(s)" + (f"; the stack runs from {code}" if code else "")
    )
    rounds = []
    try:
        url = stack.start().url
        _round(url, large, tiny)  # warm-up: both models loaded and run once
        for r in range(args.rounds):
            rounds.append(_round(url, large, tiny))
            big = ", ".join(f"{v:.2f}" for v in rounds[-1]["large_s"])
            log(f"  round {r + 1}: tiny {rounds[-1]['tiny_s'][0]:.2f} s, large {big} s")
    finally:
        stack.stop()
    tiny_s = [x["tiny_s"][0] for x in rounds]
    large_s = [v for x in rounds for v in x["large_s"]]
    result = {
        "mode": "fairness",
        "cpu_count": os.cpu_count(),
        "code": str(code) if code else None,
        "tiny_s": tiny_s,
        "tiny_median_s": statistics.median(tiny_s),
        "large_median_s": statistics.median(large_s),
        "failed": 0,
    }
    log(f"median: tiny job {result['tiny_median_s']:.2f} s, large jobs {result['large_median_s']:.2f} s")
    return result
