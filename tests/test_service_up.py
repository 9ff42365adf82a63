"""``srgan up``: the whole stack from one command (embedded Redis), and a clean stop on SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servicekit import REPO, alive, child_pids, free_port, photo, png, wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_and_stops_cleanly(sig, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}  # no SRGAN_REDIS_URL: embedded
    env.update(SRGAN_WORKER_METRICS_PORT="0", SRGAN_HEARTBEAT_INTERVAL_S="0.3", OMP_NUM_THREADS="2")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "up", "--port", str(port), "--model", "bicubic"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, "srgan up to be ready", interval=0.2)
        r = httpx.post(
            f"{url}/v1/upscale", files={"file": ("a.png", png(photo(size=(10, 12))))}, data={"model": "bicubic"}
        )
        assert r.status_code == 202
        assert httpx.get(f"{url}{r.json()['links']['result']}", params={"wait": 30}).status_code == 200
        children = child_pids(up.pid)
        assert len(children) == 3, children  # redis-server, worker, gateway
        up.send_signal(sig)
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()
        leftovers = [p for p in children if alive(p)]
        assert not leftovers, f"processes left running: {leftovers}"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/healthz", timeout=1)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child(up_pid: int, what: str) -> int | None:
    found = [p for p in child_pids(up_pid) if what in cmdline(p) and alive(p)]
    return found[0] if found else None


@pytest.mark.slow
def test_up_restarts_a_worker_or_redis_that_dies(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}  # embedded Redis
    env.update(SRGAN_WORKER_METRICS_PORT="0", SRGAN_HEARTBEAT_INTERVAL_S="0.3", SRGAN_WORKER_DEAD_AFTER_S="2",
               SRGAN_MAINTENANCE_INTERVAL_S="0.5", OMP_NUM_THREADS="2")  # fmt: skip
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(port), "--model", "bicubic"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert up.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def job() -> dict:
        r = httpx.post(f"{url}/v1/upscale", files={"file": ("a.png", png(photo(size=(10, 12))))},
                       data={"model": "bicubic"}, timeout=30)  # fmt: skip
        assert r.status_code == 202, r.text
        return r.json()

    try:
        wait_for(ready, 120, "srgan up to be ready", interval=0.2)
        worker = child(up.pid, " worker")
        assert worker is not None, [cmdline(p) for p in child_pids(up.pid)]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: "worker exited (status -9)" in log_path.read_text(), 60, "the restart log line")
        wait_for(lambda: child(up.pid, " worker") not in (None, worker), 60, "a new worker process")
        wait_for(ready, 120, "readiness after the worker restart", interval=0.2)
        done = job()
        r = httpx.get(f"{url}/v1/jobs/{done['id']}/result", params={"wait": 60}, timeout=90)
        assert r.status_code == 200, r.text

        redis_pid = child(up.pid, "redis-server")
        assert redis_pid is not None
        before = job()  # accepted just before Redis dies: the append-only file keeps it
        os.kill(redis_pid, signal.SIGKILL)
        wait_for(lambda: "redis exited (status -9)" in log_path.read_text(), 60, "the Redis restart log line")
        wait_for(ready, 120, "readiness after the Redis restart", interval=0.2)
        for j in (before, job()):
            r = httpx.get(f"{url}/v1/jobs/{j['id']}/result", params={"wait": 60}, timeout=90)
            assert r.status_code == 200, r.text
        assert up.poll() is None
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
