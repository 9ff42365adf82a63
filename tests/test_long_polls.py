"""Long-polls that scale, on a real gateway, Redis and worker: 1,000 concurrent waiters on one job and 1,000 on
many jobs all get their answer, no error, while the gateway's Redis connections stay bounded."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import redis

from tests.servicekit import photo, png, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
WAITERS = 1000
MAX_CONNECTIONS = 16  # the gateway's Redis pool: far fewer than waiters


@pytest.fixture(scope="module")
def st(stack_factory):
    # No worker at first: the jobs stay queued until every waiter is waiting.
    s = stack_factory(["bicubic"], workers=0, ready=False, redis_max_connections=MAX_CONNECTIONS,
                      max_queue_depth=5000, max_wait_s=300)  # fmt: skip
    return s


def waiters_now(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    m = re.search(r"^srgan_long_poll_waiters (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


def gateway_connections(st) -> int:
    r = redis.Redis.from_url(st.env["SRGAN_REDIS_URL"])
    try:
        return sum(1 for c in r.client_list() if c.get("name", "").startswith("srgan-gateway"))
    finally:
        r.close()


def submit(c: httpx.Client, i: int) -> str:
    r = c.post("/v1/upscale", files={"file": ("a.png", png(photo(size=(8, 8 + i % 7), top=i % 50)))},
               data={"model": "bicubic"})  # fmt: skip
    assert r.status_code == 202, r.text
    return r.json()["id"]


def wait_all(st, job_ids: list[str], baseline: int) -> tuple[list[httpx.Response | BaseException], int]:
    """WAITERS concurrent long-polls spread over ``job_ids``; a worker starts once all of them wait. Returns the
    answers and the most gateway Redis connections seen meanwhile."""
    most = 0

    async def main():
        nonlocal most
        limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=WAITERS + 10)
        async with httpx.AsyncClient(base_url=st.url, timeout=300, limits=limits) as c:
            tasks = [asyncio.create_task(c.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}", params={"wait": 240}))
                     for i in range(WAITERS)]  # fmt: skip
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: wait_for(lambda: waiters_now(st.url) >= baseline + WAITERS,
                                                              240, "every long-poll to be waiting", interval=0.5))  # fmt: skip
            most = await loop.run_in_executor(None, gateway_connections, st)
            st.add_worker(["bicubic"])  # now the jobs run and end
            while not all(t.done() for t in tasks):
                most = max(most, await loop.run_in_executor(None, gateway_connections, st))
                await asyncio.wait(tasks, timeout=0.5)
            return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(main())
    for w in st.workers:
        w.stop()
    st.workers.clear()
    return answers, most


def check(answers, job_ids: list[str], most: int) -> None:
    errors = [a for a in answers if isinstance(a, BaseException) or a.status_code != 200]
    assert not errors, f"{len(errors)} of {WAITERS} failed, e.g. {errors[:3]!r}"
    statuses = {a.json()["status"] for a in answers}
    assert statuses == {"finished"}, statuses
    assert {a.json()["id"] for a in answers} == set(job_ids)
    # One subscription, plus the bounded pool: connections do not grow with the waiters.
    assert most <= MAX_CONNECTIONS + 4, most
    print(f"\n{WAITERS} waiters on {len(job_ids)} job(s): {WAITERS} answered 'finished', 0 errors; gateway Redis "
          f"connections at most {most} (pool limit {MAX_CONNECTIONS})")  # fmt: skip


def test_a_thousand_waiters_on_one_job(st):
    with st.client() as c:
        job = submit(c, 0)
    answers, most = wait_all(st, [job], waiters_now(st.url))
    check(answers, [job], most)


def test_a_thousand_waiters_on_many_jobs(st):
    with st.client() as c:
        jobs = [submit(c, i) for i in range(200)]  # five waiters each
    answers, most = wait_all(st, jobs, waiters_now(st.url))
    check(answers, jobs, most)
