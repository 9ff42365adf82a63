"""Nothing accepted is lost: a worker SIGKILLed mid-job, a worker stopped with SIGTERM mid-batch, and the
retry limit for jobs that keep killing workers. Each test has its own redis-server."""

from __future__ import annotations

import os
import signal
import time

import httpx
import numpy as np
import pytest

from tests.servicekit import (
    PrivateRedis,
    decode_png,
    direct_upscale,
    enqueue_upscale,
    photo,
    png,
    service_env,
    start_gateway,
    start_worker,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def redis_server():
    r = PrivateRedis()
    yield r
    r.stop()


def submit(c: httpx.Client, data: bytes, model: str) -> str:
    r = c.post("/v1/upscale", files={"file": ("a.png", data)}, data={"model": model})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_sigkill_mid_job_then_a_new_worker_finishes_everything(redis_server, tmp_path):
    # Small tiles, one per forward pass: each job takes many passes, so it can be caught midway.
    env = service_env(redis_server.url, "crash", worker_tile=24, worker_batch_size=1, worker_batch_jobs=2)
    gateway, url = start_gateway(env, tmp_path)
    w1 = start_worker(env, tmp_path, ["espcn"])
    w2 = None
    try:
        wait_ready(url)
        c = httpx.Client(base_url=url, timeout=60)
        images = [png(photo("astronaut", size=(192, 192), top=100 + 20 * i, left=150)) for i in range(5)]
        ids = [submit(c, data, "espcn") for data in images]

        def midway():
            jobs = [c.get(f"/v1/jobs/{j}").json() for j in ids]
            hit = [j["id"] for j in jobs if j["status"] == "started" and 0 < j["progress"] < 1]
            return hit

        wait_for(midway, 120, "a job halfway through", interval=0.02)
        os.kill(w1.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert w1.proc.wait(10) == -signal.SIGKILL
        # The job seen midway may have finished in the moment before the kill; one the worker held is left
        # "started" by it (it claims two at a time), and that is the one recovery must save.
        victims = [j for j in ids if c.get(f"/v1/jobs/{j}").json()["status"] == "started"]
        assert victims, "the worker died holding no job"

        w2 = start_worker(env, tmp_path, ["espcn"])
        requeued_after = None
        for jid in ids:
            r = c.get(f"/v1/jobs/{jid}/result", params={"wait": 60})
            assert r.status_code == 200, r.text
            if jid == victims[0] and requeued_after is None:
                requeued_after = time.monotonic() - killed_at
        recovered_after = time.monotonic() - killed_at
        jobs = {j: c.get(f"/v1/jobs/{j}").json() for j in ids}
        assert all(j["status"] == "finished" for j in jobs.values()), jobs
        assert jobs[victims[0]]["attempts"] == 2
        assert all(j["attempts"] in (1, 2) for j in jobs.values())
        i = ids.index(victims[0])
        diff = np.abs(
            decode_png(c.get(f"/v1/jobs/{victims[0]}/result").content).astype(int)
            - direct_upscale(images[i], "espcn", tile=24).astype(int)
        )
        assert diff.max() <= 2 and diff.mean() < 0.1

        # rq's view agrees: nothing failed, nothing stuck in started, the dead worker is gone.
        from rq import Queue, Worker
        from rq.registry import FailedJobRegistry, StartedJobRegistry

        q = Queue("crash", connection=redis_server.client)
        assert FailedJobRegistry(queue=q).count == 0
        assert StartedJobRegistry(queue=q).count == 0
        names = {w.name for w in Worker.all(connection=redis_server.client)}
        assert len(names) == 1 and not any(str(w1.pid) in n.split(".") for n in names), names
        print(
            f"\nSIGKILL test: {len(ids)} jobs, killed job {victims[0]} finished {requeued_after:.1f} s after "
            f"the kill (worker_dead_after_s=2), all finished after {recovered_after:.1f} s; 0 lost, 0 failed"
        )
        c.close()
    finally:
        for w in (w1, w2):
            if w is not None:
                w.stop()
        gateway.stop()


def test_sigterm_finishes_the_batch_in_flight_and_gives_back_the_rest(redis_server, tmp_path):
    env = service_env(redis_server.url, "term", worker_tile=24, worker_batch_size=1, worker_batch_jobs=1)
    gateway, url = start_gateway(env, tmp_path)
    w1 = start_worker(env, tmp_path, ["espcn"])
    w2 = None
    try:
        wait_ready(url)
        c = httpx.Client(base_url=url, timeout=60)
        # Big enough (169 tiles, one per forward pass) that the first job is seen in flight on any machine.
        ids = [submit(c, png(photo("coffee", size=(300, 300), top=20 + 30 * i, left=200)), "espcn") for i in range(3)]
        wait_for(
            lambda: c.get(f"/v1/jobs/{ids[0]}").json()["status"] == "started",
            300,
            "the first job to start",
            interval=0.02,
        )
        w1.signal(signal.SIGTERM)
        assert w1.proc.wait(60) == 0, w1.output()[-2000:]
        first = c.get(f"/v1/jobs/{ids[0]}").json()
        assert first["status"] == "finished" and first["attempts"] == 1  # the batch in flight was finished
        rest = [c.get(f"/v1/jobs/{j}").json() for j in ids[1:]]
        assert any(j["status"] == "queued" for j in rest), rest  # not taken: left for the next worker
        w2 = start_worker(env, tmp_path, ["espcn"])
        for jid in ids:
            assert c.get(f"/v1/jobs/{jid}/result", params={"wait": 60}).status_code == 200
        c.close()
    finally:
        for w in (w1, w2):
            if w is not None:
                w.stop()
        gateway.stop()


def test_a_job_that_keeps_killing_workers_fails_with_worker_died(redis_server):
    """Claims of a dead worker (no heartbeat): requeued while attempts remain, then failed `worker_died`."""
    from app.config import Settings
    from worker.jobs import JobStore
    from worker.presence import reap_dead_workers
    from worker.storage import make_storage

    s = Settings(redis_url=redis_server.url, queue="reap", key_prefix="reap", max_attempts=2)
    conn = redis_server.client
    storage = make_storage(s, conn)
    store = JobStore.for_queue(s, conn, storage)
    keys = store.keys
    data = png(photo(size=(8, 8)))
    # Reaping waits until Redis has been up longer than a worker's silence that counts as death (0 s here).
    wait_for(lambda: int(conn.info("server")["uptime_in_seconds"]) >= 1, 10, "Redis to be up for a second")

    def reap():
        return reap_dead_workers(store, dead_after_s=0)

    doomed = enqueue_upscale(store, data, "bicubic")
    conn.sadd(keys.workers, "ghost1")  # a worker "ghost1" claimed and started it, then died without a word
    assert [c.id for c in store.claim("ghost1", 8)] == [doomed]
    assert reap() == {"requeued": [doomed], "failed": []}
    fresh = enqueue_upscale(store, data, "bicubic")
    conn.sadd(keys.workers, "ghost2")  # so did "ghost2": the doomed job's second attempt
    claims = store.claim("ghost2", 8)
    assert [(c.id, c.record.attempts) for c in claims] == [(doomed, 2), (fresh, 1)]
    assert store.depth() == 0
    assert reap() == {"requeued": [fresh], "failed": [doomed]}
    assert store.queued_ids() == [fresh]
    rec = store.get(doomed)
    assert rec.status == "failed" and rec.data.error.code == "worker_died" and rec.data.expires_at
    assert doomed in store.queue.failed_job_registry.get_job_ids()
    assert storage.get("input", doomed) is None and storage.get("input", fresh) == data
    assert not conn.exists(keys.inflight("ghost2")) and not conn.sismember(keys.workers, "ghost2")
    assert store.claim_token(doomed) is None
    # A dead worker's late end changes nothing: its claim is gone.
    from worker.records import JobError

    assert store.fail([(claims[0], JobError(code="late", message="too late"))]) == [False]
    assert store.get(doomed).data.error.code == "worker_died"
    # A live worker's claims are left alone.
    conn.sadd(keys.workers, "alive-one")
    conn.set(keys.alive("alive-one"), "{}", ex=30)
    assert [c.id for c in store.claim("alive-one", 8)] == [fresh]
    assert reap() == {"requeued": [], "failed": []}
    assert conn.llen(keys.inflight("alive-one")) == 1
