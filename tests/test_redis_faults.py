"""Redis faults, with real processes and a real redis-server (append-only file, fsync per write): Redis SIGKILLed
and restarted under load, three times; and Redis down for 30 s. The worker and the gateway never exit, reconnect
by themselves, and no accepted job is lost; a result computed while Redis was down is stored when it is back."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.servicekit import assert_error, photo, png, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# Small tiles, one per forward pass: a job takes many passes, so batches are in flight when Redis dies.
SLOW_JOBS = {"worker_tile": 24, "worker_batch_size": 1, "worker_batch_jobs": 2}


def image(i: int) -> bytes:
    return png(photo("astronaut", size=(192, 192), top=60 + 7 * (i % 20), left=120 + 5 * (i % 30)))


class Load(threading.Thread):
    """A client that submits ``n`` images one after another; an upload refused (Redis down: 503) is retried
    until accepted. ``accepted``: the job ids the gateway answered 202 for."""

    def __init__(self, url: str, n: int):
        super().__init__(daemon=True)
        self.url, self.n = url, n
        self.accepted: list[str] = []
        self.refused: dict[str, int] = {}
        self.unexpected: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            for i in range(self.n):
                while True:
                    try:
                        r = c.post("/v1/upscale", files={"file": ("a.png", image(i))}, data={"model": "espcn"})
                    except httpx.HTTPError as e:
                        self.unexpected.append(repr(e))
                        time.sleep(0.2)
                        continue
                    if r.status_code == 202:
                        self.accepted.append(r.json()["id"])
                        break
                    code = r.json()["error"]["code"] if r.status_code == 503 else f"{r.status_code}: {r.text[:200]}"
                    self.refused[code] = self.refused.get(code, 0) + 1
                    if r.status_code != 503:
                        self.unexpected.append(code)
                    time.sleep(0.2)


def ready_code(url: str) -> str | None:
    """None when ready, else the error code /readyz gives (or 'down' when the gateway does not answer)."""
    try:
        r = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.HTTPError:
        return "down"
    return None if r.status_code == 200 else r.json()["error"]["code"]


def some_job_started(c: httpx.Client, ids: list[str], ended: set[str] | None = None) -> bool:
    """Whether one of ``ids`` is being computed now (``ended`` collects those seen finished, to skip later)."""
    ended = ended if ended is not None else set()
    for jid in ids:
        if jid in ended:
            continue
        try:
            r = c.get(f"/v1/jobs/{jid}")
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            continue
        status = r.json()["status"]
        if status == "started":
            return True
        if status in ("finished", "failed", "canceled"):
            ended.add(jid)
    return False


def outcome(c: httpx.Client, ids: list[str]) -> dict[str, list[str]]:
    """Wait for every accepted job to end; sort them into finished, failed and lost (unknown to the service)."""
    out: dict[str, list[str]] = {"finished": [], "failed": [], "lost": []}
    for jid in ids:
        deadline = time.monotonic() + 300
        while True:
            r = c.get(f"/v1/jobs/{jid}", params={"wait": 30})
            if r.status_code == 404:
                out["lost"].append(jid)
                break
            assert r.status_code == 200, r.text
            status = r.json()["status"]
            if status in ("finished", "failed", "canceled"):
                out["finished" if status == "finished" else "failed"].append(jid)
                break
            assert time.monotonic() < deadline, f"job {jid} still {status} after 300 s"
    return out


def test_redis_sigkilled_and_restarted_under_load_three_times(stack_factory):
    st = stack_factory(["espcn"], private_redis=True, aof=True, **SLOW_JOBS)
    worker, gateway = st.workers[0], st.gateway
    load = Load(st.url, 30)
    load.start()
    kills: list[int] = []
    ended: set[str] = set()
    with st.client() as c:
        for _ in range(3):
            n = 8 * (len(kills) + 1)  # spread the kills over the load
            wait_for(lambda n=n: len(load.accepted) >= n and some_job_started(c, list(load.accepted), ended), 300,
                     f"{n} jobs accepted and one in flight", interval=0.05)  # fmt: skip
            st.redis.kill()
            kills.append(len(load.accepted))
            wait_for(lambda: ready_code(st.url) == "redis_unavailable", 60, "/readyz to say Redis is unavailable")
            assert worker.alive() and gateway.alive()
            st.redis.restart()
            wait_for(lambda: ready_code(st.url) is None, 120, "/readyz to recover by itself", interval=0.2)
        load.join(600)
        assert not load.is_alive()
        got = outcome(c, load.accepted)
        answers = [c.get(f"/v1/jobs/{j}").json() for j in got["finished"]]
    assert worker.alive() and gateway.alive(), "a process exited"
    assert "Traceback" not in worker.output(), worker.output()[-3000:]
    assert not load.unexpected, load.unexpected
    assert set(load.refused) <= {"redis_unavailable"}, load.refused  # never another error for an outage
    assert not got["lost"] and not got["failed"], got
    assert len(got["finished"]) == len(load.accepted) == 30
    print(f"\nRedis SIGKILL x3 under load: {len(load.accepted)} accepted, {len(got['finished'])} finished, "
          f"{len(got['failed'])} failed, {len(got['lost'])} lost; uploads refused while down: "
          f"{sum(load.refused.values())} (all 503 redis_unavailable), kills after {kills} accepted; "
          f"attempts > 1: {sum(a['attempts'] > 1 for a in answers)}")  # fmt: skip


def test_redis_down_for_30_seconds(stack_factory):
    st = stack_factory(["espcn"], private_redis=True, aof=True, **SLOW_JOBS)
    worker, gateway = st.workers[0], st.gateway
    with st.client() as c:
        ids = []
        for i in range(6):
            r = c.post("/v1/upscale", files={"file": ("a.png", image(i))}, data={"model": "espcn"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        wait_for(lambda: some_job_started(c, ids), 300, "a job in flight", interval=0.05)
        st.redis.kill()
        down_at = time.monotonic()
        seen = set()
        while time.monotonic() - down_at < 30:  # the scenario: Redis stays away for 30 s
            seen.add(ready_code(st.url))
            assert_error(c.post("/v1/upscale", files={"file": ("a.png", image(99))}, data={"model": "espcn"}),
                         503, "redis_unavailable")  # fmt: skip
            assert_error(c.get(f"/v1/jobs/{ids[0]}"), 503, "redis_unavailable")
            assert worker.alive() and gateway.alive()
            time.sleep(1)
        assert seen == {"redis_unavailable"}, seen  # said what was wrong, all the while
        st.redis.restart()
        wait_for(lambda: ready_code(st.url) is None, 120, "/readyz to recover by itself", interval=0.2)
        got = outcome(c, ids)
        answers = [c.get(f"/v1/jobs/{j}").json() for j in ids]
        results = [c.get(f"/v1/jobs/{j}/result") for j in ids]
    assert not got["lost"] and not got["failed"], got
    assert all(r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n" for r in results)
    assert worker.alive() and gateway.alive(), "a process exited"
    log = worker.output()
    assert "Redis answers again" in log, log[-3000:]
    kept = "kept during the outage" in log
    print(f"\nRedis down 30 s: {len(ids)} accepted, {len(got['finished'])} finished, {len(got['failed'])} failed, "
          f"{len(got['lost'])} lost; attempts {[a['attempts'] for a in answers]}; a result computed during the "
          f"outage stored afterwards: {kept}")  # fmt: skip
