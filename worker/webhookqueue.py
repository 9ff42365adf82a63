"""The queue of webhook deliveries, on the job store's side: jobs with a ``callback_url`` whose end is yet to
be delivered, in a sorted set by due time. The gateway delivers them (``app/webhooks.py``): it claims due
ones for a lease, and records each attempt in the job, fenced by its claim."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rq.job import Job

from model.clock import utcnow
from worker.jobbase import StoreBase
from worker.records import JobRecord, WebhookState

__all__ = ["WebhookClaim", "WebhookQueue"]


@dataclass
class WebhookClaim:
    """A due webhook delivery someone has claimed: the job as it is now, and the token fencing the record."""

    record: JobRecord
    token: str


class WebhookQueue(StoreBase):
    """The webhook deliveries of :class:`worker.jobs.JobStore` (asynchronous: the gateway calls them)."""

    async def aclaim_webhooks(self, n: int, lease_s: float, token: str) -> list[WebhookClaim]:
        """Claim up to ``n`` due deliveries for ``lease_s`` seconds (after that, anyone may claim them again)."""
        now = utcnow().timestamp()
        rows = await self._ascripts["WEBHOOK_CLAIM"](
            keys=[self.keys.webhooks], args=[now, now + lease_s, n, Job.redis_job_namespace_prefix, token]
        )
        claims = []
        for jid, flat in rows:
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
            rec = self.parse(jid.decode(), raw)
            if rec is not None:
                claims.append(WebhookClaim(rec, token))
        return claims

    async def arecord_webhook(self, claim: WebhookClaim, state: WebhookState, due: dt.datetime | None) -> bool:
        """Record a delivery attempt: the job's delivery state, and when to try again (None: no more tries).
        False when the claim has lapsed (someone else has it now) or the job has expired."""
        return bool(
            await self._ascripts["WEBHOOK_RECORD"](
                keys=[self.keys.webhooks, Job.key_for(claim.record.id)],
                args=[claim.token, state.model_dump_json(), "" if due is None else due.timestamp(), claim.record.id],
            )
        )

    async def awebhooks_due(self) -> int:
        """Deliveries waiting (due now or later, claimed ones included)."""
        return int(await self.aconn.zcard(self.keys.webhooks))
