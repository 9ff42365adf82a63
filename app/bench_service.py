"""``srgan bench service``: real images through the running stack vs. the engine alone, in the same run.

Without ``--url`` it starts its own stack (a private redis-server, one worker, the gateway on free ports) and
stops it afterwards. Three measurements:

1. **engine**: the same images, decoded, through one ``Upscaler`` with the worker's settings in a child
   process (tensors in, tensors out), before and after each (2); and the same again with the results encoded
   in two threads as they complete (what ``srgan upscale`` does): the two ceilings the service is compared with;
2. **service**: ``--concurrency`` clients each POST an image and long-poll its result until all ``--images``
   are done: images/s, output MP/s, latency p50/p95/p99, the ratios to (1), and the fraction of the run's
   wall time the worker's engine was computing (from the worker's ``srgan_inference_seconds_total``); with
   ``--rounds N``, N service runs between engine runs, and the median round is reported;
3. **overhead**: one client, a tiny image, the ``bicubic`` model, one job at a time: end-to-end latency minus
   what decode + engine + encode of that image cost in-process = what the gateway and the queue add per job.

On a machine shared with other CPU-bound processes, expect the service to beat "engine alone": with Linux's
group scheduling, a process whose encoding threads keep it runnable gets a larger share of the cores than one
that only runs torch's threads (measured here: the same engine computed 16 images in 7.3 s with encodes running
beside it, 12 s without). The engine-busy fraction does not depend on that.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["register", "run_service_bench"]


def register(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "service", help="whole-stack throughput and overhead vs. the engine", description=__doc__.split("\n\n")[1]
    )
    p.add_argument(
        "--url",
        help="bench a running gateway instead of starting a stack (no worker settings "
        "are known then: the engine runs with this machine's defaults)",
    )
    p.add_argument(
        "--mode",
        choices=["throughput", "overhead", "fairness"],
        default="throughput",
        help="throughput: real photos through the model vs. the engine alone (below); overhead: bicubic on small "
        "photos from many clients, CPU ms per job for each process (app/bench_overhead.py); fairness: a tiny job's "
        "latency in one batch with two large ones (app/bench_fairness.py)",
    )
    p.add_argument("--model", default="srresnet", help="model for the throughput run (default: srresnet)")
    p.add_argument("--images", "-n", type=int, default=16, help="images for the throughput run (default: 16)")
    p.add_argument("--concurrency", "-c", type=int, help="concurrent clients (default: 8; overhead mode 32)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="service runs, each between two engine runs; the median round is reported (default: 1)",
    )
    p.add_argument("--data", type=Path, help="folder of images (default: scikit-image's bundled photos)")
    p.add_argument(
        "--size",
        type=int,
        default=128,
        help="crop photos to at most SIZE x SIZE input pixels (default: 128, one CPU tile; 0 keeps them whole)",
    )
    p.add_argument("--format", default="png", choices=["png", "webp", "jpeg"], help="output format")
    p.add_argument("--overhead-jobs", type=int, default=200, help="tiny bicubic jobs, one at a time")
    p.add_argument("--batch-jobs", type=int, help="worker: jobs taken at once (default: the setting's)")
    p.add_argument("--jobs", type=int, default=2000, help="overhead mode: jobs per round (default: 2000)")
    p.add_argument("--distinct", type=int, default=32, help="overhead mode: distinct photos (default: 32)")
    p.add_argument("--min-size", type=int, default=64, help="overhead mode: smallest side in pixels (default: 64)")
    p.add_argument("--max-size", type=int, default=128, help="overhead mode: largest side in pixels (default: 128)")
    p.add_argument("--client-procs", type=int, default=2, help="overhead mode: client processes (default: 2)")
    p.add_argument(
        "--flow",
        choices=["two-step", "prefer-wait"],
        default="two-step",
        help="overhead mode: clients submit then long-poll the result (two requests), or POST with "
        "Prefer: wait (one request)",
    )
    p.add_argument("--code", type=Path, help="overhead/fairness: run the stack from this checkout (before vs. after)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_service)


# -- images ----------------------------------------------------------------------------------------------------


def load_images(data: Path | None, n: int, size: int) -> list[bytes]:
    """``n`` PNG-encoded real photographs (cycled if fewer), each cropped to at most ``size`` square."""
    import numpy as np
    from PIL import Image

    arrays = []
    if data is not None:
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        if not files:
            raise FileNotFoundError(f"no images in {data}")
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    else:
        import skimage.data as sd

        for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "motorcycle_left"):
            try:
                a = getattr(sd, name)()
            except Exception:  # some need a download (pooch) on some installs
                continue
            if isinstance(a, tuple):
                a = a[0]
            if a.ndim == 3 and a.shape[2] == 3:
                arrays.append(np.ascontiguousarray(a))
    out = []
    for i in range(n):
        a = arrays[i % len(arrays)]
        if size:
            h, w = a.shape[:2]
            k = i // len(arrays)  # different crops when cycling
            top = min(h - min(h, size), (k * 37) % max(1, h - size + 1))
            left = min(w - min(w, size), (k * 53) % max(1, w - size + 1))
            a = a[top : top + size, left : left + size]
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def tiny_png(w: int = 16, h: int = 16) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[i]


# -- the stack -------------------------------------------------------------------------------------------------


def bench_stack(models: list[str], batch_jobs: int | None, env: dict | None = None, cwd: Path | None = None):
    """A private redis-server, one worker and the gateway, on free ports (``app.up.Stack``)."""
    from app.up import Stack, free_port

    metrics_port = free_port()
    stack_env = {**os.environ, **(env or {}), "SRGAN_WORKER_METRICS_PORT": str(metrics_port),
                 "SRGAN_MAX_QUEUE_DEPTH": "100000", "SRGAN_WORKER_MODELS": ",".join(models)}  # fmt: skip
    stack_env.pop("SRGAN_REDIS_URL", None)
    if batch_jobs:
        stack_env["SRGAN_WORKER_BATCH_JOBS"] = str(batch_jobs)
    return Stack(env=stack_env, log_dir=tempfile.mkdtemp(prefix="srgan-bench-"), cwd=cwd)


# -- measurements ----------------------------------------------------------------------------------------------


class EngineBench:
    """The engine alone with the worker's settings (decoded images in, tensors out), timed in a child process
    started the way the stack starts the worker (its own session), so both get the same share of a busy
    machine's CPUs. Each :meth:`run` is a fresh child: warm-up on two images, then one timed pass over all."""

    def __init__(self, images: list[bytes], model: str, env: dict[str, str] | None = None, scale: int = 4):
        self.dir = Path(tempfile.mkdtemp(prefix="srgan-bench-engine-"))
        for i, data in enumerate(images):
            (self.dir / f"{i:04d}.png").write_bytes(data)
        self.model, self.scale, self.env = model, scale, env
        self.n = len(images)
        self.runs: list[dict] = []

    def run(self) -> float:
        import subprocess

        from app.up import spawn

        child = spawn(
            [sys.executable, "-m", "app.bench_service", self.model, str(self.scale), str(self.dir)],
            self.env,
            stdout=subprocess.PIPE,
        )
        out, _ = child.communicate(timeout=3600)
        if child.returncode != 0:
            raise RuntimeError(f"engine benchmark child failed with status {child.returncode}")
        self.runs.append(json.loads(out))
        return self.runs[-1]["seconds"]

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def result(self, runs: list[dict]) -> dict:
        dt = statistics.mean(r["seconds"] for r in runs)
        dt_codec = statistics.mean(r["seconds_with_encode"] for r in runs)
        mp = runs[-1]["output_mp"]
        return {
            "images_per_s": self.n / dt,
            "out_mp_per_s": mp / dt,
            "seconds": dt,
            "with_encode_images_per_s": self.n / dt_codec,
            "runs_s": [round(r["seconds"], 3) for r in runs],
            "runs_with_encode_s": [round(r["seconds_with_encode"], 3) for r in runs],
            "output_mp": mp,
            **{k: runs[-1][k] for k in ("device", "precision", "tile", "batch_size")},
        }


def _engine_child(model: str, scale: int, folder: Path) -> dict:
    from app.config import Settings
    from model.engine import Upscaler
    from model.imageio import decode, encode
    from model.zoo import load_model
    from worker.models import engine_config
    from worker.pipeline import io_threads

    s = Settings()
    if s.worker_threads:
        import torch

        torch.set_num_threads(s.worker_threads)
    up = Upscaler(load_model(model, scale), engine_config(s))
    decoded = [decode(p.read_bytes()) for p in sorted(folder.glob("*.png"))]
    rgb = [d.rgb for d in decoded]
    up.upscale(rgb[:2])  # warm-up
    t0 = time.perf_counter()
    out = up.upscale(rgb)
    dt = time.perf_counter() - t0
    # The same images with their results encoded by as many threads as the worker has, while the next tiles
    # compute: the work the worker does, without the queue and the HTTP around it.
    from concurrent.futures import ThreadPoolExecutor

    fmt = os.environ.get("SRGAN_BENCH_FORMAT", "png")
    with ThreadPoolExecutor(io_threads(s)) as pool:
        t1 = time.perf_counter()
        futures = []
        for i, sr in up.upscale_iter(rgb):
            if isinstance(sr, Exception):
                raise sr
            futures.append(pool.submit(encode, decoded[i], sr, fmt, 90, png_compress_level=s.worker_png_compress_level))
        for f in futures:
            f.result()
        dt_codec = time.perf_counter() - t1
    d = up.describe()
    return {
        "seconds": dt,
        "seconds_with_encode": dt_codec,
        "output_mp": sum(o.shape[1] * o.shape[2] for o in out) / 1e6,
        **{k: d[k] for k in ("device", "precision", "tile", "batch_size")},
    }


def worker_inference_seconds(metrics_url: str | None, model: str) -> float | None:
    """The worker's ``srgan_inference_seconds_total`` for ``model`` (None without a metrics URL)."""
    if metrics_url is None:
        return None
    import re

    import httpx

    text = httpx.get(metrics_url, timeout=10).text
    m = re.search(rf'^srgan_inference_seconds_total\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def service_run(
    url: str,
    images: list[bytes],
    model: str,
    concurrency: int,
    fmt: str,
    metrics_url: str | None = None,
    scale: int = 4,
) -> dict:
    from PIL import Image

    from app.client import Client

    # Checked from the result itself: asking for the job resource too would add a request per image that a
    # client does not need, and on a 2-core machine the clients' CPU is taken from the worker.
    expected = [tuple(scale * n for n in Image.open(io.BytesIO(b)).size) for b in images]
    latencies: list[float] = []
    failures: list[str] = []
    out_px = [0]
    lock = threading.Lock()
    next_i = [0]

    def client() -> None:
        with Client(url, timeout=600) as c:
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= len(images):
                    return
                t = time.perf_counter()
                try:
                    job = c.submit(images[i], model=model, format=fmt)
                    data = c.result(job, wait=600)
                    size = Image.open(io.BytesIO(data)).size  # reads the header only
                except Exception as e:  # counted, reported
                    with lock:
                        failures.append(str(e))
                    continue
                with lock:
                    if size != expected[i]:
                        failures.append(f"job {job.id}: a {size} result, expected {expected[i]}")
                        continue
                    latencies.append(time.perf_counter() - t)
                    out_px[0] += size[0] * size[1]

    with Client(url) as c:  # warm the worker's engine for this model first
        c.result(c.submit(images[0], model=model, format=fmt), wait=600)
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    busy0 = worker_inference_seconds(metrics_url, model)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    busy1 = worker_inference_seconds(metrics_url, model)
    return {
        "engine_busy_fraction": None if busy0 is None or busy1 is None else (busy1 - busy0) / dt,
        "images_per_s": len(latencies) / dt,
        "out_mp_per_s": out_px[0] / 1e6 / dt,
        "seconds": dt,
        "failed": len(failures),
        "errors": failures[:3],
        "latency_s": {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99)},
    }


def overhead_run(url: str, jobs: int) -> dict:
    """Tiny bicubic jobs one at a time, end to end, minus the same work done in this process (decode + engine
    + encode, on one CPU thread as the worker does for tiny images): what the gateway and the queue add.

    The in-process runs come first, not interleaved: torch's idle threads would otherwise compete with the
    stack for this machine's two cores during the end-to-end runs."""
    import torch

    from app.client import Client
    from model.engine import Upscaler
    from model.imageio import decode, encode
    from model.zoo import load_model

    data = tiny_png()
    up = Upscaler(load_model("bicubic", 4))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    direct = []
    try:
        for i in range(jobs + 10):
            t = time.perf_counter()
            d = decode(data)
            encode(d, up.upscale([d.rgb])[0], "png", 90, png_compress_level=1)
            if i >= 10:
                direct.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    e2e = []
    with Client(url) as c:
        for i in range(jobs + 10):
            t = time.perf_counter()
            job = c.submit(data, model="bicubic")
            c.result(job, wait=30)
            if i >= 10:  # the first few warm caches and connections
                e2e.append(time.perf_counter() - t)
    p50_direct = statistics.median(direct)
    return {
        "jobs": jobs,
        "image": "16x16 PNG, bicubic x4",
        "e2e_ms": {"p50": 1e3 * pct(e2e, 50), "p95": 1e3 * pct(e2e, 95), "p99": 1e3 * pct(e2e, 99)},
        "in_process_ms_p50": 1e3 * p50_direct,
        "overhead_ms_p50": 1e3 * (pct(e2e, 50) - p50_direct),
    }


def run_service_bench(args: argparse.Namespace, log=print) -> dict:
    images = load_images(args.data, args.images, args.size)
    from PIL import Image

    sizes = [Image.open(io.BytesIO(b)).size for b in images]
    log(
        f"{len(images)} images, {sizes[0][0]}x{sizes[0][1]} ... input; model {args.model} x4, "
        f"{args.concurrency} clients, {args.format} output"
    )
    result: dict = {
        "model": args.model,
        "images": len(images),
        "concurrency": args.concurrency,
        "format": args.format,
        "cpu_count": os.cpu_count(),
    }
    stack = None if args.url else bench_stack([args.model, "bicubic"], args.batch_jobs)
    engine = None
    try:
        url = args.url if stack is None else stack.start().url
        log("engine alone ...")
        env = {**(stack.env if stack is not None else os.environ), "SRGAN_BENCH_FORMAT": args.format}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `srgan worker` runs torch (worker/commands.py)
        engine = EngineBench(images, args.model, env)
        log(f"  {len(images) / engine.run():.2f} images/s")
        metrics_url = (
            f"http://127.0.0.1:{stack.env['SRGAN_WORKER_METRICS_PORT']}/metrics" if stack is not None else None
        )
        rounds = []
        for r in range(args.rounds):
            log("service ..." if args.rounds == 1 else f"service, round {r + 1} of {args.rounds} ...")
            sv = service_run(url, images, args.model, args.concurrency, args.format, metrics_url)
            log(f"  {sv['images_per_s']:.2f} images/s; engine alone again ...")
            engine.run()
            eng = engine.result(engine.runs[-2:])  # the runs just before and after this service run
            rounds.append(
                {
                    "service": sv,
                    "engine": eng,
                    "ratio_to_engine": sv["images_per_s"] / eng["images_per_s"],
                    "ratio_to_engine_with_encode": sv["images_per_s"] / eng["with_encode_images_per_s"],
                }
            )
            if args.rounds > 1:
                log(f"  round {r + 1}: ratio to engine {rounds[-1]['ratio_to_engine']:.3f}")
        # A shared machine's speed drifts by 10% and more within a minute: report the median round.
        median = sorted(rounds, key=lambda x: x["ratio_to_engine"])[(len(rounds) - 1) // 2]
        result.update(median)
        if args.rounds > 1:
            result["ratios_to_engine"] = [round(x["ratio_to_engine"], 3) for x in rounds]
            log(f"median of {args.rounds} rounds (ratios {result['ratios_to_engine']}):")
        sv = result["service"]
        log(
            f"  engine: {result['engine']['images_per_s']:.2f} images/s, {result['engine']['out_mp_per_s']:.2f} "
            f"output MP/s (runs before and after: {result['engine']['runs_s']} s; "
            f"{result['engine']['precision']}, tile {result['engine']['tile']})"
        )
        log(
            f"  {sv['images_per_s']:.2f} images/s, {sv['out_mp_per_s']:.2f} output MP/s, latency p50 "
            f"{sv['latency_s']['p50']:.2f} s, p95 {sv['latency_s']['p95']:.2f} s, p99 {sv['latency_s']['p99']:.2f} "
            f"s, {sv['failed']} failed; ratio to engine {result['ratio_to_engine']:.3f} (to engine + encoding in "
            f"one process, {result['engine']['with_encode_images_per_s']:.2f} images/s: "
            f"{result['ratio_to_engine_with_encode']:.3f})"
        )
        if sv["engine_busy_fraction"] is not None:
            log(f"  the worker's engine was computing {sv['engine_busy_fraction']:.1%} of the service run's wall time")
        if args.overhead_jobs:
            log(f"overhead: {args.overhead_jobs} tiny bicubic jobs, one at a time ...")
            result["overhead"] = overhead_run(url, args.overhead_jobs)
            o = result["overhead"]
            log(
                f"  end to end p50 {o['e2e_ms']['p50']:.2f} ms (p95 {o['e2e_ms']['p95']:.2f}, p99 "
                f"{o['e2e_ms']['p99']:.2f}); in-process decode+engine+encode {o['in_process_ms_p50']:.2f} ms; "
                f"gateway+queue overhead p50 {o['overhead_ms_p50']:.2f} ms"
            )
    finally:
        if engine is not None:
            engine.close()
        if stack is not None:
            stack.stop()
    return result


def cmd_bench_service(args: argparse.Namespace) -> int:
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.mode in ("overhead", "fairness"):
        from app.bench_fairness import run_fairness_bench
        from app.bench_overhead import run_overhead_bench

        result = (run_overhead_bench if args.mode == "overhead" else run_fairness_bench)(args, log=log)
        failed = result["failed"]
    else:
        args.concurrency = args.concurrency or 8
        result = run_service_bench(args, log=log)
        failed = result["service"]["failed"]
    if args.json:
        print(json.dumps(result, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":  # the engine child of EngineBench: MODEL SCALE FOLDER -> one JSON line
    print(json.dumps(_engine_child(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))))
