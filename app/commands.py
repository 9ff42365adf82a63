"""The service's commands: ``srgan serve`` (the gateway), ``srgan up`` (the whole stack), ``srgan client``.

Heavy modules (uvicorn, httpx, torch) are imported inside the commands, so ``srgan --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


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
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or s.host,
        port=args.port or s.port,
        access_log=args.access_log,
        log_level="info" if level <= logging.INFO else "warning",
        timeout_graceful_shutdown=10,
    )
    return 0


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
    return run_stack(
        args.host or s.host,
        args.port or s.port,
        redis_port=args.redis_port,
        worker_args=worker_args,
        verbose=getattr(args, "verbose", 0),
    )


# -- srgan client ---------------------------------------------------------------------------------------------


def register_client(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("client", help="talk to a running service", description="Client of a running service.")
    csub = p.add_subparsers(dest="client_command", required=True, metavar="{upscale}")
    u = csub.add_parser("upscale", help="upload images, wait with a progress bar, save the results")
    u.add_argument("files", nargs="+", type=Path, metavar="FILE")
    u.add_argument(
        "--url",
        default=os.environ.get("SRGAN_URL", "http://127.0.0.1:8000"),
        help="the gateway (default: $SRGAN_URL or %(default)s)",
    )
    u.add_argument("-o", "--out", type=Path, default=Path("."), help="output folder (default: .)")
    u.add_argument("--model", "-m", help="model name, or name@version (default: the service's)")
    u.add_argument("--scale", "-s", type=int)
    u.add_argument("--format", "-f", choices=["png", "webp", "jpeg"], default=None)
    u.add_argument("--quality", "-q", type=int)
    u.add_argument("--no-progress", action="store_true")
    u.set_defaults(func=cmd_client_upscale)


def cmd_client_upscale(args) -> int:
    import sys
    import uuid

    import httpx
    from tqdm import tqdm

    from app.client import Client, ServiceError

    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with Client(args.url) as c:
        for path in args.files:
            bar = tqdm(
                total=100,
                desc=path.name,
                unit="%",
                disable=args.no_progress,
                bar_format="{desc} {percentage:3.0f}%|{bar}|",
            )

            def show(job: dict, bar=bar, name=path.name) -> None:
                bar.n = round(100 * job["progress"])
                pos = job.get("queue_position")
                bar.set_description_str(f"{name} ({job['status']}" + (f", {pos} ahead)" if pos else ")"), refresh=False)
                bar.refresh()

            try:
                job = c.submit(
                    path,
                    model=args.model,
                    scale=args.scale,
                    format=args.format,
                    quality=args.quality,
                    idempotency_key=uuid.uuid4().hex,
                )
                job = c.wait(job["id"], on_progress=show)
                if job["status"] != "finished":
                    err = job.get("error") or {"code": job["status"], "message": f"the job was {job['status']}"}
                    raise ServiceError(409, err["code"], err["message"])
                ext = {"webp": ".webp", "jpeg": ".jpg"}.get(job["format"], ".png")
                target = c.save_result(job["id"], args.out / f"{path.stem}_x{job['scale']}{ext}")
                bar.n = 100
                bar.set_description_str(
                    f"{path.name} -> {target} ({job['output']['width']}x{job['output']['height']})", refresh=False
                )
                bar.close()
            except (ServiceError, httpx.HTTPError, OSError) as e:
                bar.close()
                print(f"error: {path}: {e}", file=sys.stderr)
                failures += 1
    return 1 if failures else 0
