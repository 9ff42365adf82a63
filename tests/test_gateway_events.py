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


def test_a_reading_made_after_mark_is_not_read_again_unless_the_job_was_announced_since():
    """The upload route with ``Prefer: wait`` hands over the record it just wrote: no second read of a job nobody
    announced, but a read (and so the end) for one whose end was heard between the mark and the wait, even while
    another waiter was watching it, and for every job once the listener has reconnected (or is down)."""
    ev = events()
    ev.connected.set()
    reads: list[str] = []

    def reader(job: str, value: str):
        async def read():
            reads.append(job)
            return value

        return read

    async def main():
        mark = ev.mark()
        quiet = asyncio.create_task(ev.wait_until("a", 30, reader("a", "finished"), lambda v: v == "finished",
                                                  initial="queued", since=mark))  # fmt: skip
        while ev.waiters() < 1:
            await asyncio.sleep(0.001)
        unread = "a" not in reads  # waiting on what the caller wrote, without a read of its own
        ev.announce("a")
        quiet = await quiet
        ev.announce("b")  # b ended after the mark, before its wait began
        ended = await ev.wait_until("b", 30, reader("b", "finished"), lambda v: v == "finished", initial="queued",
                                    since=mark)  # fmt: skip
        watcher = asyncio.create_task(ev.wait_until("c", 30, reader("c", "queued"), lambda v: v == "finished"))
        while ev.waiters() < 1:
            await asyncio.sleep(0.001)
        mark = ev.mark()
        ev.announce("c")  # heard while c had a waiter: it must still count for a later one
        assert not ev._unchanged_since("c", mark) and ev._unchanged_since("a-job-never-announced", mark)
        late = await ev.wait_until("c", 0.2, reader("c", "finished"), lambda v: v == "finished", initial="queued",
                                   since=mark)  # fmt: skip
        watcher.cancel()
        ev.connected.clear()  # the listener is down: mark() cannot vouch for anything
        assert ev.mark() is None
        down = await ev.wait_until("d", 0.2, reader("d", "finished"), lambda v: v == "finished", initial="queued",
                                   since=mark)  # fmt: skip
        return unread, quiet, ended, late, down

    unread, quiet, ended, late, down = asyncio.run(main())
    assert unread and quiet == "finished" and reads.count("a") == 1  # one read: the end's
    assert ended == "finished" and reads.count("b") == 1
    assert late == "finished" and down == "finished" and "d" in reads


def test_marks_forget_nothing_they_cannot_vouch_for():
    """Past its memory of announcements (4,096 jobs), a mark older than what was forgotten reads again."""
    ev = events()
    ev.connected.set()
    mark = ev.mark()
    for i in range(5000):
        ev.announce(f"job{i}")
    assert not ev._unchanged_since("job0", mark)  # forgotten, but announced after the mark
    assert not ev._unchanged_since("never-announced", mark)  # other jobs were forgotten: cannot vouch
    assert ev._unchanged_since("never-announced", ev.mark())
    assert not ev._unchanged_since("job4999", mark) and len(ev._recent) == 4096
