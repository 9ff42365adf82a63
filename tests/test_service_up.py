"""``srgan up``: the whole stack from one command (embedded Redis), and a clean stop on SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servicekit import REPO, alive, child_pids, free_port, photo, png, wait_for  # noqa: E402

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
