"""Long-poll wake-ups (app.service.JobEvents) without a server: no announcement may be lost."""

from __future__ import annotations

import asyncio
import time

from app.service import JobEvents


def test_an_announcement_during_a_read_is_not_lost():
    events = JobEvents("redis://127.0.0.1:1/0", "unused")  # never started: the test announces by hand
    reads = []

    async def read():
        reads.append(time.monotonic())
        if len(reads) == 1:  # the job ends while its status is being read: the listener fires now
            for ev in events._waiters["job"]:
                ev.set()
            return "started"
        return "finished"

    async def main():
        t0 = time.monotonic()
        value = await events.wait_until("job", 30, read, lambda v: v == "finished", recheck_s=20)
        return value, time.monotonic() - t0

    value, took = asyncio.run(main())
    assert value == "finished" and len(reads) == 2 and took < 1.0
    assert "job" not in events._waiters  # the waiter cleaned up after itself


def test_wait_gives_up_at_the_deadline_and_returns_the_last_reading():
    events = JobEvents("redis://127.0.0.1:1/0", "unused")

    async def read():
        return "queued"

    t0 = time.monotonic()
    value = asyncio.run(events.wait_until("job", 0.3, read, lambda v: v == "finished", recheck_s=0.1))
    assert value == "queued" and 0.25 < time.monotonic() - t0 < 2
