"""``srgan bench service --mode overhead``: what the service costs per job when the model costs nothing.

A fast GPU makes the service overhead-bound; this reproduces that on any machine: the ``bicubic`` model, small
photographs (64-128 px a side, PNG out), many concurrent clients, ``--jobs`` jobs. It starts its own stack
(a private redis-server, one worker, the gateway) and reports:

- jobs/s, latency p50/p90/p99 (submit to result bytes), failures (every result's size is checked);
- **CPU ms per job for each process**: gateway, worker, Redis and the clients, from ``/proc/PID/stat``
  (utime + stime of the process and its reaped children, summed over its live descendants);
- the worker's CPU split by pipeline stage (claim, decode, engine, encode, store, progress: the worker's
  ``srgan_worker_stage_cpu_seconds_total``), the rest being its bookkeeping (rq, heartbeat, threads).

The clients are ``--client-procs`` processes of asyncio tasks using :class:`app.client.AsyncClient`, started
before the clock and released together; ``--flow two-step`` (submit, then a long-polled ``GET .../result``) or
``prefer-wait`` (one ``POST`` with ``Prefer: wait=60`` that answers with the image). ``--code DIR`` runs the
stack from another checkout (the same benchmark, before vs. after a change); a stack without the stage counters
reports the worker's total only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["run_overhead_bench", "process_cpu_s", "STAGES"]

STAGES = ("claim", "decode", "engine", "encode", "store", "progress")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- CPU accounting ----------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    f = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(f[1]), sum(int(x) for x in f[11:15]) / _TICK


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every descendant (live ones and reaped ones)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s is not None:
                stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
            todo.extend(children.get(p, []))
    return total


# -- inputs ------------------------------------------------------------------------------------------------------


def overhead_images(n: int, lo: int = 64, hi: int = 128, data: Path | None = None) -> list[bytes]:
    """``n`` PNG crops of real photographs, each side between ``lo`` and ``hi`` pixels."""
    import numpy as np
    from PIL import Image

    from app.bench_service import load_images

    rng = np.random.default_rng(16)
    out = []
    for i, png in enumerate(load_images(data, n, 0 if data is None else hi)):
        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        h, w = (int(x) for x in rng.integers(lo, hi + 1, 2))
        h, w = min(h, a.shape[0]), min(w, a.shape[1])
        top, left = (i * 29) % (a.shape[0] - h + 1), (i * 41) % (a.shape[1] - w + 1)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(a[top : top + h, left : left + w])).save(buf, "PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, without decoding."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# -- the clients (child processes) -------------------------------------------------------------------------------


async def _clients(url: str, images: list[bytes], jobs: int, concurrency: int, scale: int, flow: str) -> dict:
    from app.client import AsyncClient
    from app.client.base import check, upload

    expected = [tuple(scale * v for v in png_size(b) or (0, 0)) for b in images]
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(jobs))

    async def one(c: AsyncClient) -> None:
        for i in counter:
            img = i % len(images)
            t = time.perf_counter()
            try:
                if flow == "prefer-wait":  # one request: the image comes back when the job ends within 60 s
                    kw = upload(images[img], None, None, {"model": "bicubic", "format": "png"})
                    r = check(
                        await c.http.post("/v1/upscale", headers={**kw.pop("headers"), "Prefer": "wait=60"}, **kw)
                    )
                    data = r.content if r.status_code == 200 else await c.result(r.json()["id"], wait=60)
                else:
                    data = await c.result(await c.submit(images[img], model="bicubic", format="png"), wait=60)
            except Exception as e:  # counted and reported
                errors.append(f"{type(e).__name__}: {e}")
                continue
            if png_size(data) != expected[img]:
                errors.append(f"a {png_size(data)} result, expected {expected[img]}")
                continue
            latencies.append(time.perf_counter() - t)

    async with AsyncClient(url, timeout=120) as c:
        await asyncio.gather(*(one(c) for _ in range(concurrency)))
    return {"latencies": latencies, "errors": errors}


def _client_main(spec_path: str) -> None:
    """Child: read the spec, say ready, wait for the go line on stdin, run, print one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    images = [Path(p).read_bytes() for p in spec["images"]]
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0, t0 = time.process_time(), time.perf_counter()
    out = asyncio.run(_clients(spec["url"], images, spec["jobs"], spec["concurrency"], spec["scale"], spec["flow"]))
    out.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - t0)
    print(json.dumps(out), flush=True)


# -- the run -----------------------------------------------------------------------------------------------------


def _metrics(url: str) -> dict[str, float]:
    """The worker's stage CPU counters, decode/encode time and finished jobs (what it has of them)."""
    import httpx

    text = httpx.get(url, timeout=10).text
    out: dict[str, float] = {}
    for m in re.finditer(r'^srgan_worker_stage_cpu_seconds_total\{stage="(\w+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    for name in ("srgan_decode_seconds_sum", "srgan_encode_seconds_sum"):
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        if found:
            out[name] = float(found.group(1))
    out["finished"] = sum(
        float(v) for v in re.findall(r"^srgan_worker_jobs_finished_total\{[^}]*\} (\S+)$", text, re.M)
    )
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def split(total: int, parts: int) -> list[int]:
    """``total`` shared among ``parts`` as evenly as whole numbers allow."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def start_clients(module: str, specs: list[dict]) -> list[subprocess.Popen]:
    """One ``python -m MODULE client SPEC.json`` process per spec, each started and ready (it has connected and
    waits for the word to go), so that none of their start-up is timed."""
    tmp = Path(tempfile.mkdtemp(prefix="srgan-bench-clients-"))
    children = []
    for k, spec in enumerate(specs):
        (tmp / f"client-{k}.json").write_text(json.dumps(spec))
        children.append(subprocess.Popen([sys.executable, "-m", module, "client", str(tmp / f"client-{k}.json")],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # fmt: skip
    for c in children:
        if c.stdout is None or c.stdout.readline().strip() != "ready":
            raise RuntimeError("a benchmark client did not start")
    return children


def release_clients(children: list[subprocess.Popen]) -> tuple[list[dict], float]:
    """Let the ready clients go together; their results (each one's last line of JSON) and the wall seconds from
    the start until the last finished."""
    t0 = time.perf_counter()
    for c in children:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    results = []
    for c in children:
        out, _ = c.communicate(timeout=3600)
        if c.returncode != 0:
            raise RuntimeError(f"a benchmark client failed with status {c.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results, time.perf_counter() - t0


def overhead_round(stack, metrics_url: str, files: list[Path], jobs: int, concurrency: int, procs: int,
                   flow: str = "two-step") -> dict:  # fmt: skip
    """One timed run of ``jobs`` jobs from ``procs`` client processes on a started stack."""
    procs = max(1, min(procs, concurrency))
    specs = [{"url": stack.url, "images": [str(f) for f in files], "jobs": share, "concurrency": conc, "scale": 4,
              "flow": flow} for share, conc in zip(split(jobs, procs), split(concurrency, procs), strict=True)]  # fmt: skip
    children = start_clients("app.bench_overhead", specs)
    pids = {"gateway": stack.gateway.pid, "worker": stack.workers[0].pid}
    if stack.redis is not None:
        pids["redis"] = stack.redis.pid
    m0, cpu0 = _metrics(metrics_url), {k: process_cpu_s(p) for k, p in pids.items()}
    results, wall = release_clients(children)
    cpu1, m1 = {k: process_cpu_s(p) for k, p in pids.items()}, _metrics(metrics_url)
    latencies = [x for r in results for x in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    ok = len(latencies)
    per_job = max(1, ok)
    cpu_ms = {k: 1e3 * (cpu1[k] - cpu0[k]) / per_job for k in pids}
    cpu_ms["clients"] = 1e3 * sum(r["cpu_s"] for r in results) / per_job
    worker: dict[str, float | None] = {s: 1e3 * (m1[s] - m0.get(s, 0.0)) / per_job for s in STAGES if s in m1}
    if worker:
        worker["bookkeeping"] = cpu_ms["worker"] - sum(v for v in worker.values() if v is not None)
    else:  # a stack from before the stage counters: wall time of decode and encode only
        worker = {
            "decode_wall": 1e3
            * (m1.get("srgan_decode_seconds_sum", 0) - m0.get("srgan_decode_seconds_sum", 0))
            / per_job,
            "encode_wall": 1e3
            * (m1.get("srgan_encode_seconds_sum", 0) - m0.get("srgan_encode_seconds_sum", 0))
            / per_job,
        }
    return {
        "jobs": jobs,
        "ok": ok,
        "failed": len(errors),
        "errors": errors[:3],
        "worker_finished": int(m1["finished"] - m0["finished"]),
        "seconds": wall,
        "jobs_per_s": ok / wall,
        "latency_ms": {f"p{q}": 1e3 * pct(latencies, q) for q in (50, 90, 99)},
        "cpu_ms_per_job": cpu_ms,
        "worker_cpu_ms_per_job": worker,
    }


def run_overhead_bench(args: argparse.Namespace, log=print) -> dict:
    from app.bench_service import bench_stack

    if args.url:
        raise ValueError("--mode overhead starts its own stack (it reads each process's CPU): leave out --url")
    concurrency = args.concurrency or 32
    images = overhead_images(args.distinct, args.min_size, args.max_size, args.data)
    tmp = Path(tempfile.mkdtemp(prefix="srgan-bench-overhead-"))
    files = []
    for i, b in enumerate(images):
        files.append(tmp / f"{i:03d}.png")
        files[-1].write_bytes(b)
    code = Path(args.code).resolve() if args.code else None
    env = {"PYTHONPATH": os.pathsep.join(filter(None, (str(code), os.environ.get("PYTHONPATH"))))} if code else None
    stack = bench_stack(["bicubic"], args.batch_jobs, env, cwd=code)
    log(
        f"overhead: {args.jobs} bicubic x4 jobs ({len(images)} photos, {args.min_size}-{args.max_size} px, PNG), "
        f"{concurrency} clients in {args.client_procs} processes ({args.flow}), {args.rounds} round(s)"
        + (f"; the stack runs from {code}" if code else "")
    )
    rounds = []
    try:
        stack.start()
        metrics_url = f"http://127.0.0.1:{stack.env['SRGAN_WORKER_METRICS_PORT']}/metrics"
        run = (metrics_url, files)
        overhead_round(stack, *run, min(200, args.jobs), concurrency, args.client_procs, args.flow)  # warm-up
        for r in range(args.rounds):
            rounds.append(overhead_round(stack, *run, args.jobs, concurrency, args.client_procs, args.flow))
            x = rounds[-1]
            log(
                f"  round {r + 1}: {x['jobs_per_s']:.1f} jobs/s, p50 {x['latency_ms']['p50']:.1f} ms, "
                f"p99 {x['latency_ms']['p99']:.1f} ms, {x['failed']} failed; CPU ms/job "
                + ", ".join(f"{k} {v:.2f}" for k, v in x["cpu_ms_per_job"].items())
            )
    finally:
        stack.stop()
    median = sorted(rounds, key=lambda x: x["jobs_per_s"])[(len(rounds) - 1) // 2]
    result = {
        "mode": "overhead",
        "cpu_count": os.cpu_count(),
        "concurrency": concurrency,
        "client_procs": args.client_procs,
        "flow": args.flow,
        "code": str(code) if code else None,
        **median,
        "rounds_jobs_per_s": [round(x["jobs_per_s"], 1) for x in rounds],
        "rounds_cpu_ms_per_job": {
            k: [round(x["cpu_ms_per_job"][k], 2) for x in rounds] for k in median["cpu_ms_per_job"]
        },
    }
    w = median["worker_cpu_ms_per_job"]
    log(
        f"median round: {median['jobs_per_s']:.1f} jobs/s (rounds {result['rounds_jobs_per_s']}), latency p50 "
        f"{median['latency_ms']['p50']:.1f} / p90 {median['latency_ms']['p90']:.1f} / p99 "
        f"{median['latency_ms']['p99']:.1f} ms, {median['failed']} failed"
    )
    log("  CPU ms per job: " + ", ".join(f"{k} {v:.2f}" for k, v in median["cpu_ms_per_job"].items()))
    log("  worker: " + ", ".join(f"{k} {v:.2f}" for k, v in w.items() if v is not None))
    return result


if __name__ == "__main__":  # a client process of overhead_round: client SPEC.json
    if len(sys.argv) == 3 and sys.argv[1] == "client":
        _client_main(sys.argv[2])
    else:
        sys.exit("usage: python -m app.bench_overhead client SPEC.json")
