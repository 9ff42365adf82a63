"""Long-poll wake-ups (app.events.JobEvents), the pure logic without a server: no announcement may be lost, and
the waiters of a job share its reads. (The same with a real gateway, Redis and worker: test_long_polls.py.)"""

from __future__ import annotations

import asyncio
import time

import redis

from app.events import JobEvents


def events() -> JobEvents:
    return JobEvents(None, "unused")  # never started: the tests announce by hand


def test_an_announcement_during_a_read_is_not_lost():
    ev = events()
    reads = []

    async def read():
        reads.append(time.monotonic())
        if len(reads) == 1:  # the job ends while its status is being read: the listener fires now
            ev.announce("job")
            return "started"
        return "finished"

    async def main():
        t0 = time.monotonic()
        value = await ev.wait_until("job", 30, read, lambda v: v == "finished", recheck_s=20)
        return value, time.monotonic() - t0

    value, took = asyncio.run(main())
    assert value == "finished" and len(reads) == 2 and took < 10
    assert ev.waiters() == 0 and not ev._watches  # the waiter cleaned up after itself


def test_wait_gives_up_at_the_deadline_and_returns_the_last_reading():
    ev = events()

    async def read():
        return "queued"

    t0 = time.monotonic()
    value = asyncio.run(ev.wait_until("job", 0.3, read, lambda v: v == "finished", recheck_s=0.1))
    assert value == "queued" and time.monotonic() - t0 >= 0.3


def test_a_thousand_waiters_on_one_job_share_one_read_per_change():
    ev = events()
    state = {"value": "queued", "reads": 0}

    async def read():
        state["reads"] += 1
        await asyncio.sleep(0.01)  # a round trip: the others arrive while it is in flight
        return state["value"]

    async def main():
        waiters = [asyncio.create_task(ev.wait_until("job", 60, read, lambda v: v == "finished", recheck_s=60))
                   for _ in range(1000)]  # fmt: skip
        while ev.waiters() < 1000:
            await asyncio.sleep(0.001)
        while any(w.reading is not None and not w.reading[1].done() for w in ev._watches.values()):
            await asyncio.sleep(0.001)
        first = state["reads"]
        state["value"] = "finished"
        ev.announce("job")
        got = await asyncio.gather(*waiters)
        return first, got

    first, got = asyncio.run(main())
    assert got == ["finished"] * 1000
    assert first <= 2, first  # everyone's first reading: one read (two if one waiter came late to it)
    assert state["reads"] - first == 1  # the end: one read for all 1000


def test_waiters_on_many_jobs_get_each_their_own_job():
    ev = events()
    ended: set[str] = set()

    def reader(job_id):
        async def read():
            await asyncio.sleep(0)
            return "finished" if job_id in ended else "queued"

        return read

    async def main():
        waiters = {j: asyncio.create_task(ev.wait_until(j, 60, reader(j), lambda v: v == "finished", recheck_s=60))
                   for j in (f"job{i}" for i in range(1000))}  # fmt: skip
        while ev.waiters() < 1000:
            await asyncio.sleep(0.001)
        announced = list(waiters)[:500]
        for j in announced:
            ended.add(j)
            ev.announce(j)
        await asyncio.gather(*(waiters[j] for j in announced))  # every announced job's waiter answers
        await asyncio.sleep(0)
        still = {j for j, t in waiters.items() if not t.done()}
        for t in waiters.values():
            t.cancel()
        return still

    still = asyncio.run(main())
    assert still == {f"job{i}" for i in range(500, 1000)}  # the others keep waiting: nothing ended for them


def test_a_missed_announcement_is_caught_by_the_recheck():
    ev = events()
    state = {"value": "queued"}

    async def read():
        return state["value"]

    async def main():
        task = asyncio.create_task(ev.wait_until("job", 60, read, lambda v: v == "finished", recheck_s=0.2))
        await asyncio.sleep(0.05)
        state["value"] = "finished"  # ended, but the announcement was lost
        return await task

    assert asyncio.run(main()) == "finished"


def test_a_redis_outage_during_the_wait_is_waited_out():
    ev = events()
    calls = {"n": 0}

    async def read():
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise redis.ConnectionError("Connection refused")
        return "finished" if calls["n"] >= 4 else "queued"

    async def main():
        task = asyncio.create_task(ev.wait_until("job", 30, read, lambda v: v == "finished", recheck_s=30))
        await asyncio.sleep(0.01)
        ev.announce("job")  # the job ended while Redis went away
        return await task

    assert asyncio.run(main()) == "finished" and calls["n"] == 4


def test_an_outage_that_outlasts_the_wait_is_raised():
    ev = events()

    async def read():
        raise redis.ConnectionError("Connection refused")

    try:
        asyncio.run(ev.wait_until("job", 0.3, read, lambda v: v == "finished"))
    except redis.ConnectionError:
        pass
    else:
        raise AssertionError("the outage was not raised")
