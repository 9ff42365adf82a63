"""``srgan serve --workers 2``: two gateway processes on one port answer jobs end to end, /metrics sums both,
and a gateway process SIGKILLed is replaced (uvicorn supervises its workers) and stops being counted."""

from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.commands import gateway_processes, usable_cores
from tests.servicekit import (
    Service,
    alive,
    child_pids,
    free_port,
    photo,
    png,
    service_env,
    start_worker,
    wait_for,
    wait_ready,
)


def _metric(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        m = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_the_process_count_setting():
    assert gateway_processes(3) == 3
    assert 1 <= gateway_processes(0) <= 8 and gateway_processes(0) == max(1, min(8, usable_cores() // 2))
    with pytest.raises(SystemExit):
        gateway_processes(-1)


@pytest.fixture
def two_gateways(tmp_path):
    env = service_env("redis://127.0.0.1:6379/0", f"gwp{os.getpid()}")
    worker = start_worker(env, tmp_path, ["bicubic"])
    port = free_port()
    gateway = Service(["serve", "--port", str(port), "--workers", "2"], env, tmp_path, "gateway")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=120)
        yield gateway, url
    finally:
        gateway.stop()
        worker.stop()


@pytest.mark.slow
def test_two_gateway_processes_serve_jobs_and_sum_their_metrics(two_gateways):
    gateway, url = two_gateways
    wait_for(lambda: _metric(url, "srgan_gateway_processes") == 2, 120, "both gateway processes to count")
    assert len(child_pids(gateway.proc.pid)) >= 2

    def one_job(i: int) -> bool:
        with httpx.Client(base_url=url, timeout=60) as c:  # a new connection each: the kernel spreads them
            r = c.post("/v1/upscale", files={"file": ("a.png", png(photo(size=(16, 16), left=100 + i)))},
                       data={"model": "bicubic"})  # fmt: skip
            assert r.status_code == 202, r.text
        with httpx.Client(base_url=url, timeout=60) as c:
            job = c.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 30}).json()
            return job["status"] == "finished"

    with ThreadPoolExecutor(8) as pool:
        finished = sum(pool.map(one_job, range(24)))
    assert finished == 24
    # The counter is the sum over both processes: every upload is counted, whichever process took it.
    assert _metric(url, "srgan_http_requests_total", route="/v1/upscale", status="202") == 24

    victim = sorted(child_pids(gateway.proc.pid))[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not alive(victim), 30, "the killed gateway process to go")
    wait_for(lambda: len([p for p in child_pids(gateway.proc.pid) if alive(p)]) >= 2, 120, "a replacement process")
    wait_for(lambda: _metric(url, "srgan_gateway_processes") == 2, 120, "the count to drop the dead process")
    assert one_job(99)
