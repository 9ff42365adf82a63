"""Reading jobs: one job (with its result in the same round trip for the gateway), many jobs, the queue's
depth and positions, the ids on rq's registries, and a client's listing (``GET /v1/jobs``, newest first, by
cursor)."""

from __future__ import annotations

from worker.jobbase import StoreBase, _job_key
from worker.records import JobRecord

__all__ = ["JobReads"]


class JobReads(StoreBase):
    """The read side of :class:`worker.jobs.JobStore`."""

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        with self.conn.pipeline(transaction=False) as pipe:
            for jid in job_ids:
                pipe.hgetall(_job_key(jid) or "rq:job:-")
            raws = pipe.execute()
        return [self.parse(j, raw) for j, raw in zip(job_ids, raws, strict=True)]

    async def aget(self, job_id: str, with_result: bool = False) -> tuple[JobRecord | None, bytes | None]:
        """:meth:`get` on the asynchronous client. With ``with_result`` (and Redis storage) the result is read
        in the same round trip: None until the job has finished."""
        key = _job_key(job_id)
        if key is None:
            return None, None
        result = None
        result_key = self.storage.redis_key("result", job_id) if with_result else None
        if result_key is not None:
            async with self.aconn.pipeline(transaction=False) as pipe:
                pipe.hgetall(key)
                pipe.get(result_key)
                raw, result = await pipe.execute()
        else:
            raw = await self.aconn.hgetall(key)
        record = self.parse(job_id, raw) if raw else None
        if record is None:
            return None, None
        if record.status != "finished":
            return record, None
        if with_result and result_key is None:
            result = await self.storage.aget("result", job_id)
        return record, result

    def depth(self) -> int:
        return int(self.conn.llen(self.queue.key))

    async def adepth(self) -> int:
        return int(await self.aconn.llen(self.queue.key))

    def position(self, job_id: str) -> int | None:
        pos = self.conn.lpos(self.queue.key, job_id)
        return None if pos is None else int(pos)

    async def aposition(self, job_id: str) -> int | None:
        pos = await self.aconn.lpos(self.queue.key, job_id)
        return None if pos is None else int(pos)

    def queued_ids(self, start: int = 0, end: int = -1) -> list[str]:
        return [j.decode() for j in self.conn.lrange(self.queue.key, start, end)]

    def started_ids(self) -> list[str]:
        """Jobs claimed by the queue's registered workers (started, or about to be)."""
        names = [n.decode() for n in self.conn.smembers(self.keys.workers)]
        with self.conn.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.lrange(self.keys.inflight(n), 0, -1)
            lists = pipe.execute() if names else []
        return list(dict.fromkeys(j.decode() for ids in lists for j in ids))

    def registry_ids(self, which: str, limit: int) -> list[str]:
        """The latest ``limit`` job ids of rq's ``started`` (our claims), ``finished``, ``failed`` or
        ``canceled`` registry."""
        reg = {
            "finished": self.queue.finished_job_registry,
            "failed": self.queue.failed_job_registry,
            "canceled": self.queue.canceled_job_registry,
        }[which]
        return [j.decode() for j in self.conn.zrevrange(reg.key, 0, limit - 1)]

    # -- listing (GET /v1/jobs) -------------------------------------------------------------------------------
    async def alist(self, owner: str | None, limit: int, cursor: tuple[int, str] | None = None
                    ) -> tuple[list[JobRecord], tuple[int, str] | None]:  # fmt: skip
        """The owner's jobs, newest first: up to ``limit`` after ``cursor`` (the index position, ``(score, id)``,
        of the last job a previous page examined; None: from the newest), and the next page's cursor (None: this
        was the last). Entries whose job has expired are skipped, and dropped from the index as they are met.
        Scores are creation times in µs; jobs created in the same µs are ordered by id (as Redis orders them)."""
        key = self.keys.index(owner)
        records: list[JobRecord] = []
        for _ in range(4):  # a page of expired entries is read past; after a few, a short page with a cursor
            need = limit - len(records)
            async with self.aconn.pipeline(transaction=False) as pipe:
                if cursor is None:
                    pipe.zrevrangebyscore(key, "+inf", "-inf", start=0, num=need + 1, withscores=True)
                else:
                    pipe.zrevrangebyscore(key, cursor[0], cursor[0], withscores=True)  # ties of the cursor's score
                    pipe.zrevrangebyscore(key, f"({cursor[0]}", "-inf", start=0, num=need + 1, withscores=True)
                got = await pipe.execute()
            ties = [] if cursor is None else [(j, s) for j, s in got[0] if j.decode() < cursor[1]]
            rows = [(j.decode(), int(s)) for j, s in ties + got[-1]]
            page, more = rows[:need], len(rows) > need
            async with self.aconn.pipeline(transaction=False) as pipe:
                for jid, _ in page:
                    pipe.hgetall(_job_key(jid) or "rq:job:-")
                raws = await pipe.execute() if page else []
            gone = []
            for (jid, _), raw in zip(page, raws, strict=True):
                rec = self.parse(jid, raw) if raw else None
                if rec is None:
                    gone.append(jid)
                elif rec.data.owner == owner:
                    records.append(rec)
            if gone:
                await self.aconn.zrem(key, *gone)
            if not more:
                return records, None
            cursor = page[-1][1], page[-1][0]
            if len(records) >= limit:
                break
        return records, cursor
