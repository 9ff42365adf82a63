"""``srgan bench servers``: our service, LitServe and TorchServe side by side, and the engine alone.

Each server serves the same weights through the same engine (``model.engine.Upscaler`` with the worker's
``SRGAN_WORKER_*`` settings), the same decoder and the same PNG encoder (``model.imageio``), with its own dynamic
batching set to the same size (``--batch``: our worker's jobs taken at once; LitServe's ``max_batch_size`` and
``batch_timeout``; TorchServe's ``batch_size`` and ``max_batch_delay``, registered through its management API).
Two regimes (``--regime``):

- **compute**: SRResNet x4 on 128-px photos, 8 clients, ``--images`` images per round: the engine's speed;
- **overhead**: ``bicubic`` x4 on 64-px photos, 16 clients in 2 processes, ``--jobs`` jobs: the serving cost.

Our clients need two requests per job (``POST /v1/upscale``, then a long-polled ``GET .../result``): measured as
is, and with ``Prefer: wait`` (one request). The peers answer the POST with the image. Every result's size is
checked. For each server: images/s, latency p50/p99, the ratio to the engine alone in one process (the same
images in batches of ``--batch``; "with codecs" adds the decode and PNG encode), the CPU ms per image of the
server's whole process tree (``/proc/PID/stat``), split into the process that runs the engine and the rest (the
serving side), and the failures. The servers run side by side, the peers paused (SIGSTOP) while anything else is
measured; the rounds are interleaved (engine alone, then each server, in an order that rotates), and each row
reports its median round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run_servers_bench", "ROWS"]

# row name -> (server, client flow)
ROWS = {
    "ours": ("ours", "two-step"),
    "ours (Prefer: wait)": ("ours", "prefer-wait"),
    "LitServe": ("litserve", "litserve"),
    "TorchServe": ("torchserve", "post"),
}
REGIMES: dict[str, dict[str, Any]] = {
    "compute": {"model": "srresnet", "concurrency": 8, "client_procs": 1},
    "overhead": {"model": "bicubic", "concurrency": 16, "client_procs": 2},
}


def register(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "servers",
        help="our service vs LitServe and TorchServe, the same engine behind each (peers extra)",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--regime", choices=["compute", "overhead", "both"], default="both")
    p.add_argument("--servers", nargs="+", choices=["ours", "litserve", "torchserve"],
                   default=["ours", "litserve", "torchserve"], help="servers to run (default: all installed)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each row reports its median")
    p.add_argument("--images", "-n", type=int, default=16, help="compute regime: images per round (default: 16)")
    p.add_argument("--jobs", type=int, default=1000, help="overhead regime: jobs per round (default: 1000)")
    p.add_argument("--concurrency", "-c", type=int, help="clients (default: compute 8, overhead 16)")
    p.add_argument("--size", type=int, default=128, help="compute regime: input side in pixels (default: 128)")
    p.add_argument("--small", type=int, default=64, help="overhead regime: input side in pixels (default: 64)")
    p.add_argument("--batch", type=int, default=8, help="each server's batch: most requests at once (default: 8)")
    p.add_argument("--batch-delay-ms", type=float, default=10, help="peers: longest wait to fill a batch (10)")
    p.add_argument("--data", type=Path, help="folder of images (default: scikit-image's bundled photos)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_servers)


# -- the engine alone and the clients (child processes) ----------------------------------------------------------


def _engine_main(model: str, batch: int, folder: str, n: int) -> dict:
    from app.peer_servers import Pipeline
    from model.imageio import decode

    pipe = Pipeline(model)
    files = [p.read_bytes() for p in sorted(Path(folder).glob("*.png"))]
    blobs = [files[i % len(files)] for i in range(n)]  # as many as a round's jobs
    chunks = [blobs[i : i + batch] for i in range(0, len(blobs), batch)]
    pipe(chunks[0][:2])  # warm-up
    rgb = [[decode(b).rgb for b in c] for c in chunks]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for c in rgb:
        pipe.up.upscale(c)
    cpu1, t1 = time.process_time(), time.perf_counter()
    for b in chunks:
        pipe(b)
    cpu2, t2 = time.process_time(), time.perf_counter()
    return {"engine_s": t1 - t0, "engine_cpu_s": cpu1 - cpu0, "codecs_s": t2 - t1, "codecs_cpu_s": cpu2 - cpu1,
            "threads": pipe.threads, "images": len(blobs)}  # fmt: skip


async def _clients(spec: dict, images: list[bytes]) -> dict:
    import httpx

    from app.bench_overhead import png_size
    from app.client import AsyncClient
    from app.client.base import check, upload

    flow, url, model, scale = spec["flow"], spec["url"], spec["model"], spec["scale"]
    expected = [tuple(scale * v for v in png_size(b) or (0, 0)) for b in images]
    b64 = [base64.b64encode(b).decode() for b in images] if flow == "litserve" else []
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(spec["jobs"]))

    async def request(c, i: int) -> bytes:
        if flow == "two-step":
            return await c.result(await c.submit(images[i], model=model, format="png"), wait=600)
        if flow == "prefer-wait":
            kw = upload(images[i], None, None, {"model": model, "format": "png"})
            r = check(await c.http.post("/v1/upscale", headers={**kw.pop("headers"), "Prefer": "wait=600"}, **kw))
            return r.content if r.status_code == 200 else await c.result(r.json()["id"], wait=600)
        r = await (c.post(url, json={"image": b64[i]}) if flow == "litserve" else c.post(url, content=images[i]))
        r.raise_for_status()
        return r.content

    async def one(c) -> None:
        for k in counter:
            i = k % len(images)
            t = time.perf_counter()
            try:
                data = await request(c, i)
            except Exception as e:  # counted and reported
                errors.append(f"{type(e).__name__}: {e}"[:300])
                continue
            if png_size(data) != expected[i]:
                errors.append(f"a {png_size(data)} result, expected {expected[i]}")
                continue
            latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=spec["concurrency"] + 4, max_keepalive_connections=spec["concurrency"] + 4)
    if flow in ("two-step", "prefer-wait"):
        async with AsyncClient(url, timeout=900) as c:
            await asyncio.gather(*(one(c) for _ in range(spec["concurrency"])))
    else:
        async with httpx.AsyncClient(timeout=900, limits=limits) as h:
            await asyncio.gather(*(one(h) for _ in range(spec["concurrency"])))
    return {"latencies": latencies, "errors": errors}


def _client_main(spec_path: str) -> None:
    """Child: read the spec, say ready, wait for the go line on stdin, run, print one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    images = [Path(p).read_bytes() for p in spec["images"]]
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0 = time.process_time()
    out = asyncio.run(_clients(spec, images))
    out["cpu_s"] = time.process_time() - cpu0
    print(json.dumps(out), flush=True)


# -- rounds ------------------------------------------------------------------------------------------------------


def engine_round(model: str, batch: int, folder: Path, n: int, env: dict[str, str]) -> dict:
    """The engine alone on ``n`` of the images in ``folder`` (cycled), in a child started like the servers."""
    from app.up import spawn

    argv = [sys.executable, "-m", "app.bench_servers", "engine", model, str(batch), str(folder), str(n)]
    child = spawn(argv, env, stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=3600)
    if child.returncode != 0:
        raise RuntimeError(f"the engine-alone child failed with status {child.returncode}")
    r = json.loads(out.strip().splitlines()[-1])
    n = r["images"]
    return {"images_per_s": n / r["engine_s"], "codecs_images_per_s": n / r["codecs_s"],
            "cpu_ms": 1e3 * r["engine_cpu_s"] / n, "codecs_cpu_ms": 1e3 * r["codecs_cpu_s"] / n,
            "threads": r["threads"]}  # fmt: skip


def server_round(server, flow: str, files: list[Path], jobs: int, concurrency: int, procs: int) -> dict:
    """``jobs`` requests from ``procs`` client processes to a started server: speed, latency, CPU per image."""
    from app.bench_overhead import pct, process_cpu_s, release_clients, split, start_clients

    procs = max(1, min(procs, concurrency))
    specs = [{"flow": flow, "url": server.url, "model": server.model, "images": [str(f) for f in files], "scale": 4,
              "jobs": share, "concurrency": conc}
             for share, conc in zip(split(jobs, procs), split(concurrency, procs), strict=True)]  # fmt: skip
    children = start_clients("app.bench_servers", specs)
    roots, engine_pid = server.root_pids(), server.engine()["pid"]
    cpu0, eng0 = sum(process_cpu_s(p) for p in roots), process_cpu_s(engine_pid)
    results, wall = release_clients(children)
    cpu1, eng1 = sum(process_cpu_s(p) for p in roots), process_cpu_s(engine_pid)
    latencies = [x for r in results for x in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    n = max(1, len(latencies))
    return {
        "images": len(latencies),
        "failed": len(errors),
        "errors": errors[:3],
        "seconds": wall,
        "images_per_s": len(latencies) / wall,
        "latency_ms": {"p50": 1e3 * pct(latencies, 50), "p99": 1e3 * pct(latencies, 99)},
        "cpu_ms": 1e3 * (cpu1 - cpu0) / n,
        "engine_cpu_ms": 1e3 * (eng1 - eng0) / n,
        "serving_cpu_ms": 1e3 * ((cpu1 - cpu0) - (eng1 - eng0)) / n,
        "client_cpu_ms": 1e3 * sum(r["cpu_s"] for r in results) / n,
    }


def run_regime(regime: str, args: argparse.Namespace, servers: list[str], log=print) -> dict:
    import torch

    from app.bench_overhead import overhead_images, process_cpu_s
    from app.bench_service import load_images
    from app.peer_servers import SERVERS, THREADS_ENV

    cfg = REGIMES[regime]
    model, concurrency = cfg["model"], args.concurrency or cfg["concurrency"]
    if regime == "compute":
        images, jobs = load_images(args.data, args.images, args.size), args.images
    else:
        images, jobs = overhead_images(32, args.small, args.small, args.data), args.jobs
    folder = Path(tempfile.mkdtemp(prefix="srgan-bench-servers-"))
    files = []
    for i, b in enumerate(images):
        files.append(folder / f"{i:04d}.png")
        files[-1].write_bytes(b)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           THREADS_ENV: str(torch.get_num_threads())}  # fmt: skip
    env.pop("SRGAN_REDIS_URL", None)
    rows = [r for r, (s, _) in ROWS.items() if s in servers]
    log(f"{regime}: {model} x4, {len(images)} photos of {'x'.join(map(str, _size(images[0])))} px, {jobs} jobs a round, "
        f"{concurrency} clients, batch {args.batch}, {args.rounds} rounds; starting {', '.join(servers)} ...")  # fmt: skip
    started: dict = {}
    threads: dict = {}
    idle: dict[str, float] = {}
    rounds: dict[str, list[dict]] = {r: [] for r in ["engine", *rows]}
    try:
        for name in servers:
            started[name] = SERVERS[name](model, args.batch, args.batch_delay_ms, env).start()
        for row in rows:  # warm-up: loads the engine, opens connections
            server, flow = ROWS[row]
            server_round(started[server], flow, files, min(jobs, 2 * concurrency), concurrency, cfg["client_procs"])
        threads = {n: s.engine().get("threads") for n, s in started.items()}
        # what each costs idle, all running; then only the one measured runs (ours cannot be paused)
        cpu0, t0 = {n: sum(process_cpu_s(p) for p in s.root_pids()) for n, s in started.items()}, time.perf_counter()
        time.sleep(3)
        dt = time.perf_counter() - t0
        idle = {n: 1e3 * (sum(process_cpu_s(p) for p in s.root_pids()) - cpu0[n]) / dt for n, s in started.items()}
        for s in started.values():
            s.pause(True)
        for r in range(args.rounds):
            eng = engine_round(model, args.batch, folder, min(jobs, 1000), env)
            rounds["engine"].append(eng)
            order = rows[r % len(rows) :] + rows[: r % len(rows)]
            for row in order:
                server, flow = ROWS[row]
                started[server].pause(False)
                try:
                    x = server_round(started[server], flow, files, jobs, concurrency, cfg["client_procs"])
                finally:
                    started[server].pause(True)
                x["ratio"] = x["images_per_s"] / eng["images_per_s"]
                x["ratio_codecs"] = x["images_per_s"] / eng["codecs_images_per_s"]
                rounds[row].append(x)
            log(f"  round {r + 1}: engine {eng['images_per_s']:.2f} images/s; "
                + ", ".join(f"{row} {rounds[row][-1]['images_per_s']:.2f}" for row in rows))  # fmt: skip
    finally:
        for s in started.values():
            s.pause(False)
            s.stop()
        shutil.rmtree(folder, ignore_errors=True)
    result: dict = {"model": model, "images": len(images), "jobs": jobs, "concurrency": concurrency,
                    "batch": args.batch, "rounds": args.rounds, "rows": {},
                    "idle_cpu_ms_per_s": idle,
                    "engine_threads": threads}  # fmt: skip
    for row, xs in rounds.items():
        med = sorted(xs, key=lambda x: x["images_per_s"])[(len(xs) - 1) // 2]
        med = {**med, "rounds_images_per_s": [round(x["images_per_s"], 2) for x in xs]}
        if row != "engine":
            med["ratio"] = statistics.median(x["ratio"] for x in xs)
            med["ratio_codecs"] = statistics.median(x["ratio_codecs"] for x in xs)
            med["failed"] = sum(x["failed"] for x in xs)
        result["rows"][row] = med
    return result


def _size(png: bytes) -> tuple[int, int]:
    from app.bench_overhead import png_size

    return png_size(png) or (0, 0)


def table(result: dict) -> str:
    head = (f"{'':22} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x engine':>9} {'x +codecs':>9} "
            f"{'CPU ms/img':>10} {'serving':>8} {'failed':>6}")  # fmt: skip
    lines = [head]
    for row, x in result["rows"].items():
        if row == "engine":
            for name, ips, cpu in (("engine alone", x["images_per_s"], x["cpu_ms"]),
                                   ("engine + codecs", x["codecs_images_per_s"], x["codecs_cpu_ms"])):  # fmt: skip
                ratio = ips / x["images_per_s"]
                lines.append(f"{name:22} {ips:9.2f} {'':>8} {'':>8} {ratio:9.2f} "
                             f"{ratio * x['images_per_s'] / x['codecs_images_per_s']:9.2f} {cpu:10.1f}")  # fmt: skip
            continue
        lat = x["latency_ms"]
        lines.append(f"{row:22} {x['images_per_s']:9.2f} {lat['p50']:8.1f} {lat['p99']:8.1f} {x['ratio']:9.2f} "
                     f"{x['ratio_codecs']:9.2f} {x['cpu_ms']:10.1f} {x['serving_cpu_ms']:8.1f} {x['failed']:6d}")  # fmt: skip
    idle = ", ".join(f"{n} {v:.1f}" for n, v in result.get("idle_cpu_ms_per_s", {}).items())
    lines.append(f"(CPU of the idle servers, ms per s: {idle}; paused while another is measured, except ours)")
    return "\n".join(lines)


def run_servers_bench(args: argparse.Namespace, log=print) -> dict:
    from app.peer_servers import peer_missing

    servers, skipped = [], {}
    for name in dict.fromkeys(args.servers):
        why = peer_missing(name)
        if why:
            skipped[name] = why
            log(f"skipping {name}: {why}")
        else:
            servers.append(name)
    result: dict = {"cpu_count": os.cpu_count(), "skipped": skipped, "regimes": {}}
    for regime in ["compute", "overhead"] if args.regime == "both" else [args.regime]:
        result["regimes"][regime] = run_regime(regime, args, servers, log)
        log(table(result["regimes"][regime]))
    return result


def cmd_bench_servers(args: argparse.Namespace) -> int:
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    result = run_servers_bench(args, log)
    if args.json:
        print(json.dumps(result, indent=2))
    return 1 if any(x.get("failed") for r in result["regimes"].values() for x in r["rows"].values()) else 0


if __name__ == "__main__":  # children: engine MODEL BATCH FOLDER N | client SPEC.json
    if len(sys.argv) == 6 and sys.argv[1] == "engine":
        print(json.dumps(_engine_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "client":
        _client_main(sys.argv[2])
    else:
        sys.exit("usage: python -m app.bench_servers engine MODEL BATCH FOLDER N | client SPEC.json")
