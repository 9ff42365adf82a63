"""``srgan bench service --mode overhead`` measures what it reports: a tiny run, its fields checked for being
measured (positive, counts that add up), never for a speed."""

from __future__ import annotations

import argparse
import os

import pytest

from app.bench_overhead import STAGES, process_cpu_s, run_overhead_bench

pytestmark = pytest.mark.slow


def test_process_cpu_counts_children():
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    assert child.returncode == 0
    assert process_cpu_s(os.getpid()) > 0  # this process, and the child it reaped


@pytest.mark.parametrize("flow", ["two-step", "prefer-wait"])
def test_a_tiny_overhead_run_reports_measured_fields(flow):
    args = argparse.Namespace(url=None, concurrency=4, jobs=40, distinct=4, min_size=64, max_size=96, data=None,
                              client_procs=2, code=None, batch_jobs=None, rounds=1, flow=flow)  # fmt: skip
    r = run_overhead_bench(args, log=lambda s: None)
    assert r["failed"] == 0, r["errors"]
    assert r["ok"] + r["failed"] == r["jobs"] == 40
    assert r["worker_finished"] == r["ok"]  # the worker finished each job the clients got back, no more
    assert r["jobs_per_s"] > 0 and r["seconds"] > 0
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]
    for proc in ("gateway", "worker", "redis", "clients"):
        assert r["cpu_ms_per_job"][proc] > 0, proc
    w = r["worker_cpu_ms_per_job"]
    for stage in ("claim", "decode", "engine", "encode", "store"):
        assert w[stage] > 0, stage
    assert set(STAGES) <= set(w)
    # The stages are measured inside the worker, its total from outside: the stages cannot exceed it by more
    # than the /proc clock's resolution (10 ms over the whole run).
    assert sum(w[s] for s in STAGES) <= r["cpu_ms_per_job"]["worker"] + 10 / r["ok"] * 2
