"""Queue limits, cancel and readiness: a gateway whose queue has no worker until the test starts one."""

from __future__ import annotations

import signal
import uuid

import httpx
import pytest

from tests.servicekit import (
    ClaimedDB,
    assert_error,
    photo,
    png,
    service_env,
    start_gateway,
    start_worker,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.timeout(150)


def submit(c: httpx.Client, data: bytes) -> httpx.Response:
    return c.post("/v1/upscale", files={"file": ("a.png", data)}, data={"model": "bicubic"})


def test_queue_full_cancel_and_readiness(tmp_path):
    db = ClaimedDB()
    env = service_env(db.url, f"bp{uuid.uuid4().hex[:6]}", max_queue_depth=3)
    gateway, url = start_gateway(env, tmp_path)
    worker = None
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            # No worker yet: not ready, but uploads are accepted up to the queue limit.
            assert_error(c.get("/readyz"), 503, "no_workers")
            ids = []
            for i in range(3):
                r = submit(c, png(photo(size=(16, 16 + i))))
                assert r.status_code == 202 and r.json()["queue_position"] == i, r.text
                ids.append(r.json()["id"])
            full = submit(c, png(photo(size=(16, 20))))
            assert_error(full, 429, "queue_full")
            assert int(full.headers["retry-after"]) >= 1
            assert c.get(f"/v1/jobs/{ids[1]}").json()["queue_position"] == 1

            # Cancel the middle one: it leaves the queue, so there is room again.
            canceled = c.delete(f"/v1/jobs/{ids[1]}")
            assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
            assert c.delete(f"/v1/jobs/{ids[1]}").json()["status"] == "canceled"  # idempotent
            assert_error(c.get(f"/v1/jobs/{ids[1]}/result"), 409, "job_canceled")
            assert c.get(f"/v1/jobs/{ids[2]}").json()["queue_position"] == 1
            r = submit(c, png(photo(size=(16, 21))))
            assert r.status_code == 202
            ids.append(r.json()["id"])
            assert_error(c.get(f"/v1/jobs/{ids[0]}/result"), 409, "not_ready")

            # A worker comes: ready; everything but the canceled job finishes.
            worker = start_worker(env, tmp_path, ["bicubic"])
            wait_ready(url)
            for jid in (ids[0], ids[2], ids[3]):
                assert c.get(f"/v1/jobs/{jid}/result", params={"wait": 60}).status_code == 200
            assert c.get(f"/v1/jobs/{ids[1]}").json()["status"] == "canceled"
            assert_error(c.delete(f"/v1/jobs/{ids[0]}"), 409, "not_cancelable")

            # The worker stops (SIGTERM): exit status 0, and the gateway is no longer ready.
            worker.signal(signal.SIGTERM)
            assert worker.proc.wait(30) == 0, worker.output()[-2000:]
            wait_ready(url, timeout=10, ready=False)
            assert_error(c.get("/readyz"), 503, "no_workers")
            assert c.get("/healthz").status_code == 200
    finally:
        if worker is not None:
            worker.stop()
        gateway.stop()
        db.release()


def test_redis_down_means_not_ready(tmp_path):
    """A gateway pointed at a Redis that does not answer is alive but not ready, with the error shape."""
    from tests.servicekit import free_port

    env = service_env(f"redis://127.0.0.1:{free_port()}/0", "nowhere")
    gateway, url = start_gateway(env, tmp_path)
    try:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert_error(httpx.get(f"{url}/readyz", timeout=30), 503, "redis_unavailable")
        r = httpx.post(
            f"{url}/v1/upscale",
            files={"file": ("a.png", png(photo(size=(8, 8))))},
            data={"model": "bicubic"},
            timeout=30,
        )
        assert_error(r, 503, "redis_unavailable")
    finally:
        gateway.stop()
    wait_for(lambda: gateway.proc.poll() is not None, 10, "the gateway to exit")
