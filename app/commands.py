"""The service's commands: ``srgan serve`` (the gateway), ``srgan up`` (the whole stack), ``srgan client``.

Heavy modules (uvicorn, httpx, torch) are imported inside the commands, so ``srgan --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        aliases=["gateway"],
        help="run the HTTP gateway",
        description="Run the HTTP gateway (uvicorn). Settings: SRGAN_* (see app/SETTINGS.md).",
    )
    p.add_argument("--host", help="listen address (default: SRGAN_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: SRGAN_PORT, 8000)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--workers",
        type=int,
        help="gateway processes on the one port (default: SRGAN_GATEWAY_WORKERS, 1; 0: one per two usable cores)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "up",
        help="run Redis + one worker + the gateway; Ctrl-C stops all",
        description="Start the whole stack on this machine: the gateway on :8000, one worker and "
        "Redis (SRGAN_REDIS_URL when set, else an embedded redis-server).",
    )
    p.add_argument("--host", help="gateway listen address (default: SRGAN_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="gateway port (default: SRGAN_PORT, 8000)")
    p.add_argument("--redis-port", type=int, help="port of the embedded Redis (default: a free one)")
    p.add_argument("--model", nargs="+", metavar="NAME", help="models the worker loads at start")
    p.set_defaults(func=cmd_up)

    register_client(sub)


def register_bench(bsub: argparse._SubParsersAction) -> None:
    from app.bench_service import register  # argparse only: cheap to import

    register(bsub)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from app.config import get_settings

    s = get_settings()
    level = logging.getLogger().level
    _raise_open_files_limit()  # every waiting long-poll is an open socket
    workers = gateway_processes(s.gateway_workers if args.workers is None else args.workers)
    with _metrics_dir(workers):
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host or s.host,
            port=args.port or s.port,
            workers=workers,
            access_log=args.access_log,
            log_level="info" if level <= logging.INFO else "warning",
            timeout_graceful_shutdown=10,
        )
    return 0


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's limit)."""
    import math
    from pathlib import Path

    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def gateway_processes(setting: int) -> int:
    """``SRGAN_GATEWAY_WORKERS`` resolved: as given, or for 0 one per two usable cores (1 to 8)."""
    if setting < 0:
        raise SystemExit("error: --workers must be 0 (from the cores) or more")
    return setting or max(1, min(8, usable_cores() // 2))


@contextlib.contextmanager
def _metrics_dir(workers: int) -> Iterator[None]:
    """With several processes, a ``PROMETHEUS_MULTIPROC_DIR`` they all write to (made here unless one is set;
    emptied at start either way, as prometheus_client requires), inherited by uvicorn's worker processes."""
    import shutil
    import tempfile
    from pathlib import Path

    if workers <= 1:
        yield
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="srgan-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def _raise_open_files_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def cmd_up(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.up import run_stack

    s = get_settings()
    worker_args = ["--model", *args.model] if args.model else []
    os.environ.setdefault("SRGAN_GATEWAY_WORKERS", "0")  # one gateway process per two cores unless told
    return run_stack(
        args.host or s.host,
        args.port or s.port,
        redis_port=args.redis_port,
        worker_args=worker_args,
        verbose=getattr(args, "verbose", 0),
    )


# -- srgan client ---------------------------------------------------------------------------------------------


def register_client(sub: argparse._SubParsersAction) -> None:
    from model.commands import add_target_options  # argparse only: no torch

    p = sub.add_parser("client", help="talk to a running service", description="Client of a running service.")
    csub = p.add_subparsers(dest="client_command", required=True, metavar="{upscale}")
    u = csub.add_parser(
        "upscale",
        help="upload images or folders, wait with one progress bar, save the results",
        description="Upscale images on a running service. Files are named and never overwritten as by "
        "`srgan upscale` (the same rules for -o, --suffix, --recursive and --overwrite).",
    )
    add_target_options(u)
    u.add_argument(
        "--url",
        default=os.environ.get("SRGAN_URL", "http://127.0.0.1:8000"),
        help="the gateway (default: $SRGAN_URL or %(default)s)",
    )
    u.add_argument(
        "--api-key",
        metavar="KEY",
        help="client key of a gateway with keys (default: $SRGAN_API_KEY, which keeps it out of `ps`)",
    )
    u.add_argument("--model", "-m", help="model name, or name@version (default: the service's)")
    u.add_argument("--scale", "-s", type=int, help="upscaling factor (default: the service's)")
    u.add_argument(
        "--realism", type=float, help="0..1: blend srresnet (0, smooth) and srgan (1, sharpest textures); implies srgan"
    )
    u.add_argument("--quality", "-q", type=int, help="WebP/JPEG quality 1-100 (default: the service's)")
    u.add_argument("--jobs", "-j", type=int, default=4, help="images in flight at once (default: %(default)s)")
    u.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    u.set_defaults(func=cmd_client_upscale)


def cmd_client_upscale(args: argparse.Namespace) -> int:
    import sys
    import threading

    import httpx
    from tqdm import tqdm

    from app.client import Client, ServiceError
    from model.targets import plan, write_new

    failures = 0

    def fail(what: object, error: object) -> None:
        nonlocal failures
        print(f"error: {what}: {error}", file=sys.stderr)
        failures += 1

    api_key = args.api_key or os.environ.get("SRGAN_API_KEY") or None
    with Client(args.url, api_key=api_key) as c:
        try:
            catalog = c.models()
        except httpx.HTTPError as e:
            print(f"error: cannot reach the gateway at {args.url}: {e} (--url or SRGAN_URL)", file=sys.stderr)
            return 1
        except ServiceError as e:
            print(f"error: {args.url}: {e}", file=sys.stderr)
            return 1
        try:  # the model list is public: ask something that needs the key, before the first upload
            next(c.jobs(page_size=1), None)
        except ServiceError as e:
            if e.status == 401:
                what = "is not valid" if api_key else "is needed"
                print(f"error: {args.url}: a client key {what} (--api-key or SRGAN_API_KEY): {e.message}",
                      file=sys.stderr)  # fmt: skip
                return 1
        # Asked explicitly, so every name is known (and checked) before the first upload.
        scale = args.scale or catalog.default_scale or 4
        suffix = f"x{scale}" if args.suffix is None else args.suffix
        targets, fmt = plan(
            args.inputs, args.out, format=args.format, suffix=suffix, recursive=args.recursive, overwrite=args.overwrite
        )
        model = args.model or ("srgan" if args.realism is not None else catalog.default)
        bar = tqdm(
            total=len(targets),
            desc=f"{model} x{scale}",
            unit="image",
            disable=args.no_progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total} images [{elapsed}<{remaining}]",
        )
        progress = [0.0] * len(targets)
        lock = threading.Lock()

        def show(i: int, job) -> None:  # from the client's threads: each image's share moves with its tiles
            with lock:
                progress[i] = max(progress[i], 1.0 if job.finished else job.progress)
                bar.n = sum(progress)
                bar.refresh()

        results = c.upscale_iter(
            [t.source for t in targets],
            max_in_flight=args.jobs,
            on_progress=show,
            model=model,
            scale=scale,
            format=fmt,
            quality=args.quality,
            realism=args.realism,
        )
        for r in results:
            t = targets[r.index]
            with lock:
                progress[r.index] = 1.0
                bar.n = sum(progress)
                bar.refresh()
            if r.image is None:
                fail(t.source, r.error)
                continue
            try:
                write_new(t.path, r.image, overwrite=args.overwrite)
            except OSError as e:  # FileExistsError: made meanwhile, kept
                fail(t.path, e)
        bar.close()
    where = targets[0].path if len(targets) == 1 else args.out or "beside the inputs"
    written = len(targets) - failures
    print(f"{written} image(s) written to {where}" + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0
