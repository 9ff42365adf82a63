"""Measure the memory of a gateway and a CPU worker under load: the numbers behind the Kubernetes requests.

    PYTHONPATH=. python deploy/measure_memory.py [--model srresnet] [--size 128 512] [--images 16]

It starts the same stack as ``srgan bench service`` (a private redis-server, one worker, one gateway on free
ports), reads each process's resident set (``VmRSS``) when idle after start, then sends ``--images`` real
photographs per size through it with ``--concurrency`` clients, and prints the resident set afterwards and the
peak (``VmHWM``). Long-polls may wait 600 s here (``SRGAN_MAX_WAIT_S``), so that large images on a busy
machine are waited for rather than counted as failures. It also times the worker's liveness probe command (``srgan worker --alive``) and its peak
resident set, since the kubelet runs it every period.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def mib(kb: int) -> float:
    return round(kb / 1024, 1)


def probe_cost(env: dict, runs: int = 5) -> dict:
    """Wall time and peak RSS of ``srgan worker --alive`` against the running stack."""
    times, peaks, said = [], [], set()
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--alive"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        out = proc.stdout.read().decode().strip()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        times.append(time.perf_counter() - t)
        peaks.append(usage.ru_maxrss)  # KiB
        said.add((proc.returncode, out))
    return {
        "wall_ms_median": round(1e3 * sorted(times)[len(times) // 2], 1),
        "peak_rss_mib": mib(max(peaks)),
        "answers": sorted(f"exit {rc}: {out}" for rc, out in said),
    }


def _gateway_imports_torch() -> bool:
    code = "import sys, app.main; print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def main() -> None:
    from app.bench_service import bench_stack, load_images, service_run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="srresnet")
    p.add_argument("--size", type=int, nargs="+", default=[128, 512], help="input sizes (square crops)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()

    out: dict = {
        "what": "python deploy/measure_memory.py " + " ".join(sys.argv[1:]),
        "cpu_cores": os.cpu_count(),
        "gateway_imports_torch": _gateway_imports_torch(),
        "model": args.model,
        "runs": [],
    }
    env = {"SRGAN_MAX_INPUT_PIXELS": str(4096 * 4096), "SRGAN_MAX_WAIT_S": "600"}
    with bench_stack([args.model], None, env=env) as stack:
        pids = {"gateway": stack.gateway.pid, "worker": stack.workers[0].pid}
        out["idle_rss_mib"] = {k: mib(status_kb(pid, "VmRSS")) for k, pid in pids.items()}
        out["probe"] = probe_cost(stack.env)
        for size in args.size:
            images = load_images(None, args.images, size)
            r = service_run(stack.url, images, args.model, args.concurrency, "png")
            out["runs"].append(
                {
                    "input": f"{size}x{size}",
                    "images_per_s": round(r["images_per_s"], 2),
                    "failed": r["failed"],
                    "errors": r["errors"],
                    "rss_after_mib": {k: mib(status_kb(pid, "VmRSS")) for k, pid in pids.items()},
                }
            )
        out["peak_rss_mib"] = {k: mib(status_kb(pid, "VmHWM")) for k, pid in pids.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
