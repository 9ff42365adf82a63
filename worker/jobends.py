"""The worker's side of the job lifecycle: claim and start jobs (one atomic step, uploads included), write
progress, end them (finished, failed, canceled: fenced by the claim token, all of a batch in one round trip),
put them back (requeue, give back) and read a claim's token. The atomic steps are the Lua scripts of
``worker/lua.py``."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError
from rq.job import Job

from model.clock import utcnow
from worker.jobbase import _DOC, Claim, StoreBase, _after, _fmt, _parse_time, _score
from worker.records import JobError, JobRecord, JobState, OutputInfo

__all__ = ["JobEnds"]


class JobEnds(StoreBase):
    """The worker-side transitions of :class:`worker.jobs.JobStore`."""

    def claim(self, worker: str, n: int, block_s: float | None = None) -> list[Claim]:
        """Take up to ``n`` queued jobs (waiting up to ``block_s`` for the first) onto ``worker``'s claim list
        and start them, in one round trip; returns them with their uploads (Redis storage: read in the same
        step; directory storage: read here)."""
        inflight = self.keys.inflight(worker)
        first = ""
        if block_s:
            claims = self._claim(worker, n, "")  # under load jobs are waiting: one round trip, no blocking call
            if claims:
                return claims
            got = self.conn.blmove(self.queue.key, inflight, block_s, "LEFT", "RIGHT")
            if got is None:
                return []
            first = got.decode()
        return self._claim(worker, n, first)

    def _claim(self, worker: str, n: int, first: str) -> list[Claim]:
        """The CLAIM step: ``first`` (already moved onto the claim list by a blocking wait, or '') and up to
        ``n`` in all from the queue."""
        inflight = self.keys.inflight(worker)
        now = _fmt(utcnow())
        rows = self._scripts["CLAIM"](
            keys=[self.queue.key, inflight],
            args=[
                n,
                worker,
                now,
                Job.redis_job_namespace_prefix,
                self.keys.claim_prefix,
                self._input_prefix,
                self.job_ttl_s + self.result_ttl_s,
                first,
            ],
        )
        claims = []
        started = _parse_time(now.encode())
        for row in rows:
            token = (row[1] or b"").decode()
            record = JobRecord(
                id=(row[0] or b"").decode(),
                queue=self.name,
                status="started",
                created_at=_parse_time(row[3]),
                enqueued_at=_parse_time(row[4]),
                started_at=started,
                attempts=int(token.rsplit(" ", 1)[1]),
                worker=worker,
                data=_DOC.validate_json(row[2] or b""),
            )
            claims.append(Claim(record, token, row[5] if len(row) > 5 else None))
        if claims and not self._input_prefix:  # uploads not in Redis: read them here
            for c, data in zip(claims, self.storage.get_many("input", [c.id for c in claims]), strict=True):
                c.upload = data
        return claims

    def progress(self, values: list[tuple[Claim, float]]) -> None:
        """Record started jobs' progress (0..1), one round trip for all; a job no longer held is left alone."""
        if not values:
            return
        self._run_script_many(
            "PROGRESS",
            [([self.keys.claim(c.id), Job.key_for(c.id)], [c.token, round(value, 6)]) for c, value in values],
        )

    def _run_script_many(self, name: str, calls: list[tuple[list, list]]) -> list:
        """One Lua script called with each ``(keys, args)``, all in one round trip. (redis-py's own script calls
        in a pipeline ask Redis first whether it has the script: a second round trip on every execute.) A Redis
        that has lost its scripts (restarted) answers NOSCRIPT to each call, none of them run: load and resend."""
        script = self._scripts[name]
        for attempt in (0, 1):
            with self.conn.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                try:
                    return pipe.execute()
                except NoScriptError:
                    if attempt:
                        raise
                    self.conn.script_load(script.script)
        raise AssertionError("unreachable")

    def save(self, claim: Claim) -> bool:
        """Write a started job's document (a training run's state as it trains), if the worker still holds it."""
        script = (
            "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
            "redis.call('HSET', KEYS[2], 'srgan', ARGV[2], 'progress', ARGV[3]) return 1"
        )
        return bool(
            self.conn.eval(
                script,
                2,
                self.keys.claim(claim.id),
                Job.key_for(claim.id),
                claim.token,
                claim.record.data.model_dump_json(),
                round(claim.record.progress, 6),
            )
        )

    def finish(self, items: list[tuple[Claim, Any, bytes | None]], worker_key: str = "") -> list[bool]:
        """End started jobs as finished: ``(claim, output, result bytes)`` each, the document's output set from
        ``output``. Result, status, registries, claim, upload and announcement in one atomic step per job, all
        in one round trip; a job no longer held is left alone (False). An upscale job's output records the
        result's sha256 (its strong ETag)."""
        items = [
            (c, o.model_copy(update={"sha256": hashlib.sha256(r).hexdigest()}) if isinstance(o, OutputInfo) and r
             else o, r)
            for c, o, r in items
        ]  # fmt: skip
        return self._end(items, "finished", worker_key)

    def fail(self, items: list[tuple[Claim, JobError]], worker_key: str = "", *, fenced: bool = True) -> list[bool]:
        """End started jobs as failed with their errors (``fenced=False``: whoever holds them, for the reaper
        failing a dead worker's job)."""
        return self._end([(c, e, None) for c, e in items], "failed", worker_key, fenced=fenced)

    def end_canceled(self, claims: list[Claim]) -> list[bool]:
        """End started jobs as canceled (a training run that saw its cancel request)."""
        return self._end([(c, None, None) for c in claims], "canceled", "")

    def _end(self, items, status: str, worker_key: str, fenced: bool = True) -> list[bool]:
        if not items:
            return []
        now = utcnow()
        ok = status == "finished"
        registry = {
            "finished": self.queue.finished_job_registry,
            "failed": self.queue.failed_job_registry,
            "canceled": self.queue.canceled_job_registry,
        }[status].key
        counter = {"finished": "successful_job_count", "failed": "failed_job_count"}.get(status)
        in_redis = self.storage.redis_key("result", "") is not None
        if not in_redis:
            for c, _, result in items:  # the file exists before the job says finished
                if result is not None:
                    self.storage.put("result", c.id, result, self.result_ttl_s)
        # What is the same for every job of the call is made once: the times, the keys not named by a job.
        expires, ended, score, ts = (
            _after(now, self.result_ttl_s),
            _fmt(now),
            _score(self.result_ttl_s),
            now.timestamp(),
        )
        field = "output" if ok else "error"
        counter_key = worker_key if counter else ""
        progress = "1" if ok else ""
        inflight: dict[str, str] = {}
        calls = []
        for c, detail, result in items:
            c.record.data = doc = c.record.data.model_copy(update={"expires_at": expires, field: detail})
            result_key = self.storage.redis_key("result", c.id) if result is not None else None
            worker = c.record.worker or "-"
            claim_list = inflight.get(worker)
            if claim_list is None:
                claim_list = inflight[worker] = self.keys.inflight(worker)
            keys = [
                self.keys.claim(c.id),
                Job.key_for(c.id),
                claim_list,
                registry,
                self.storage.redis_key("input", c.id) or "",
                result_key or "",
                counter_key,
                self.keys.webhooks if getattr(doc, "callback_url", None) else "",
            ]
            args = [
                c.token if fenced else "",
                status,
                ended,
                doc.model_dump_json(),
                self.result_ttl_s,
                score,
                result if result_key else b"",
                self.result_ttl_s,
                c.id,
                self.keys.events,
                counter or "",
                progress,
                ts,
            ]
            calls.append((keys, args))
        done = [bool(x) for x in self._run_script_many("END", calls)]
        if not in_redis:
            for (c, _, _), d in zip(items, done, strict=True):
                if d:
                    self.storage.delete("input", c.id)
        return done

    def requeue(
        self, job_id: str, from_list: str, *, token: str = "", reason: str | None = None, attempts_change: int = 0
    ) -> bool:
        """Put a job back at the front of its queue (it was accepted first), taking it off ``from_list`` (a claim
        list). ``token``: the claim it must still have (a started job); '' for a job claimed but never started.
        ``reason`` is appended to the job's ``requeued`` list."""
        record = self.get(job_id)
        if record is None:
            self.conn.lrem(from_list, 0, job_id)
            return False
        doc: JobState = record.data
        if reason:
            doc = doc.model_copy(update={"requeued": [*doc.requeued, reason]})
        ttl = self.job_ttl_s
        if doc.expires_at is not None:  # a queued job keeps the expiry its upload was given
            ttl = max(60, int((doc.expires_at - utcnow()).total_seconds()))
        return bool(
            self._scripts["REQUEUE"](
                keys=[self.keys.claim(job_id), Job.key_for(job_id), self.queue.key, from_list],
                args=[token, doc.model_dump_json(), attempts_change, ttl, job_id],
            )
        )

    def give_back(self, worker: str, held: dict[str, str], *, keep_held: bool = False, reason: str) -> list[str]:
        """Put ``worker``'s claimed jobs back at the front of the queue: those it started (``held``: id -> token,
        or a claim token naming it) with their attempt not counted, those claimed and never started as they
        were. ``keep_held``: only the ones it does not hold (after an outage lost a claim's reply)."""
        inflight = self.keys.inflight(worker)
        back = []
        for jid in dict.fromkeys(j.decode() for j in self.conn.lrange(inflight, 0, -1)):
            if keep_held and jid in held:
                continue
            token = held.get(jid) or self.claim_token(jid)
            if token is not None and token.rsplit(" ", 1)[0] == worker:
                done = self.requeue(jid, inflight, token=token, reason=reason, attempts_change=-1)
            else:
                done = self.requeue(jid, inflight)
            if done:
                back.append(jid)
        if not keep_held:
            self.conn.delete(inflight)
        return back

    def clean_registries(self) -> None:
        """rq's own expiry of its registries' entries."""
        from rq.registry import clean_registries

        clean_registries(self.queue)

    def claim_token(self, job_id: str) -> str | None:
        raw = self.conn.get(self.keys.claim(job_id))
        return raw.decode() if raw else None
