"""Webhooks: when a job with a ``callback_url`` ends (finished, failed or canceled), its JSON is POSTed there,
signed, and retried with exponential backoff until delivered or ``SRGAN_WEBHOOK_RETRY_FOR_S`` has passed.

**Durable.** The job's end queues the delivery in Redis in the same atomic step that ends the job
(``worker/lua.py``: ``END``, ``CANCEL``): a sorted set of job ids by due time. Every gateway process runs a
:class:`WebhookSender` that claims due deliveries atomically for a lease (``JobStore.aclaim_webhooks``), POSTs
them, and records each attempt in the job (``webhook``: status, attempts, last error, when delivered), fenced by
its claim. A gateway that dies mid-delivery leaves the claim to lapse, and another gateway (or the same one,
restarted) delivers it: deliveries survive gateway and worker restarts, and arrive **at least once** (receivers
should treat a repeated ``Srgan-Delivery`` id as a duplicate).

**Signed.** ``Srgan-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with
SRGAN_WEBHOOK_SECRET>``. To verify: recompute the HMAC over the raw body as received, compare in constant time,
and reject a ``t`` more than a few minutes old (a replay).

**No SSRF.** A callback URL must be ``http``/``https`` without credentials, and its host must be (or resolve
only to) public addresses: loopback, private, link-local (cloud metadata), shared, reserved and multicast
addresses are refused at upload (422 ``callback_url_refused``) and again before each delivery (the connection
goes to the address that was checked, so DNS cannot be switched in between), unless
``SRGAN_WEBHOOK_ALLOW_PRIVATE`` is set. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from app import metrics
from model.clock import utcnow
from worker.jobs import JobStore, WebhookClaim
from worker.records import JobRecord, WebhookState
from worker.retry import REDIS_DOWN, Backoff

__all__ = ["CallbackRefused", "check_callback_url", "refused_reason", "sign", "WebhookSender"]

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 600.0
POLL_S = 0.25  # how often a gateway looks for due deliveries
CONCURRENCY = 16  # deliveries in flight per gateway process
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class CallbackRefused(ValueError):
    """A callback URL this gateway will not call (the message says why)."""


def refused_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not go to ``ip`` (None: it is a public unicast address). IPv6 forms that carry an IPv4
    address (mapped, 6to4, Teredo, NAT64) are judged by the address they carry."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return refused_reason(inner)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if not ip.is_global:
        return "a private or reserved address"
    return None


def _split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable callback URL, or CallbackRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise CallbackRefused(f"callback_url is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("callback_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise CallbackRefused("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must not carry credentials (user:password@); sign-check the body instead")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def _addresses(host: str, port: int, allow_private: bool, timeout: float = 5.0) -> list[str]:
    """The addresses a delivery to ``host`` may connect to: every one it resolves to must be allowed."""
    try:
        literal = ipaddress.ip_address(host)
        found = [literal]
    except ValueError:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as e:
            raise CallbackRefused(f"callback_url host {host!r} does not resolve: {e}") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not allow_private:
        for ip in found:
            reason = refused_reason(ip)
            if reason is not None:
                raise CallbackRefused(
                    f"callback_url host {host!r} is {reason} ({ip}); webhooks go to public addresses only "
                    "(SRGAN_WEBHOOK_ALLOW_PRIVATE allows others)"
                )
    return [str(ip) for ip in found]


async def check_callback_url(url: str, allow_private: bool) -> str:
    """The door's check of a ``callback_url``: returns it, or raises :class:`CallbackRefused`."""
    _, host, port = _split(url)
    await _addresses(host, port, allow_private)
    return url


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Srgan-Signature`` header's value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookSender:
    """Delivers the due webhooks of one queue from this gateway process (an asyncio task beside the routes).
    ``render(record)`` gives the body: the job's JSON as ``GET /v1/jobs/{id}`` shows it."""

    def __init__(self, settings, store: JobStore, render: Callable[[JobRecord], bytes]):
        self.settings = settings
        self.store = store
        self.render = render
        self.secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else ""
        self.lease_s = 2 * settings.webhook_timeout_s + 5  # a delivery in flight outlives no lease
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)
        self.inflight: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._name = f"{socket.gethostname()}:{os.getpid()}"

    async def start(self) -> None:
        """Start delivering; without SRGAN_WEBHOOK_SECRET this gateway takes no callback URL and sends nothing
        (gateways that have the secret deliver), so it does not look for due deliveries four times a second."""
        if self.settings.webhook_secret is not None:
            self._task = asyncio.create_task(self._run(), name="srgan-webhooks")

    async def close(self) -> None:
        """Stop; deliveries in flight are cut off, and their claims lapse to whoever looks next."""
        tasks = [t for t in (self._task, *self.inflight) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()

    async def _run(self) -> None:
        backoff = Backoff("gateway webhook sender", log, cap=5.0)
        while True:
            try:
                free = CONCURRENCY - len(self.inflight)
                claims = []
                if free > 0:
                    token = f"{self._name}:{uuid.uuid4().hex[:12]}"
                    claims = await self.store.aclaim_webhooks(free, self.lease_s, token)
                    for c in claims:
                        task = asyncio.create_task(self._deliver_logged(c))
                        self.inflight.add(task)
                        task.add_done_callback(self.inflight.discard)
                backoff.succeeded()
                await asyncio.sleep(0.01 if claims and len(claims) == free else POLL_S)
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as e:  # the queue is in Redis: nothing is lost meanwhile
                await asyncio.sleep(backoff.failed(e))
            except Exception:  # a bug: logged, and the loop goes on (claims lapse to the next look)
                log.exception("webhook sender: claiming due deliveries failed")
                await asyncio.sleep(1.0)

    async def _deliver_logged(self, claim: WebhookClaim) -> None:
        try:
            await self.deliver(claim)
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis down while recording, or a bug: the claim lapses and it is tried again
            log.exception(
                "webhook of job %s: the attempt could not be completed; it will be tried again", claim.record.id
            )

    async def deliver(self, claim: WebhookClaim) -> WebhookState:
        """One attempt at one delivery, recorded in the job; returns the state recorded."""
        rec = claim.record
        url = getattr(rec.data, "callback_url", None) or ""
        state = rec.webhook or WebhookState()
        started = utcnow()
        error, final = await self._post(rec, url)
        attempts = state.attempts + 1
        due: dt.datetime | None = None
        if error is None:
            state = WebhookState(status="delivered", attempts=attempts, last_attempt_at=started, delivered_at=utcnow())
            outcome = "delivered"
        else:
            delay = min(MAX_BACKOFF_S, self.settings.webhook_backoff_s * 2 ** (attempts - 1)) * random.uniform(1, 1.2)
            due = utcnow() + dt.timedelta(seconds=delay)
            give_up = (rec.ended_at or started) + dt.timedelta(seconds=self.settings.webhook_retry_for_s)
            expires = rec.data.expires_at
            if final or due > give_up or (expires is not None and due > expires):
                due = None
            state = WebhookState(
                status="pending" if due else "failed",
                attempts=attempts,
                last_error=error,
                last_attempt_at=started,
                next_attempt_at=due,
            )
            outcome = "retry" if due else "failed"
            log.warning("webhook of job %s: attempt %d failed: %s (%s)", rec.id, attempts, error,
                        f"next try in {delay:.1f} s" if due else "given up")  # fmt: skip
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        if not await self.store.arecord_webhook(claim, state, due):
            log.info("webhook of job %s: the claim lapsed or the job expired; its attempt was not recorded", rec.id)
        return state

    async def _post(self, rec: JobRecord, url: str) -> tuple[str | None, bool]:
        """POST the job to ``url``: (None, _) when delivered, else (why not, whether that is final)."""
        try:
            scheme, host, port = _split(url)
            addresses = await _addresses(host, port, self.settings.webhook_allow_private)
        except CallbackRefused as e:
            return str(e), True
        body = self.render(rec)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "srgan-service-webhook/1",
            "Srgan-Event": f"job.{rec.status}",
            "Srgan-Delivery": rec.id,
            "Srgan-Signature": sign(self.secret, int(time.time()), body),
            "Host": urlsplit(url).netloc.rpartition("@")[2],
        }
        # Connect to the address just checked (never a second lookup), naming the host for HTTP and TLS.
        target = httpx.URL(url).copy_with(host=addresses[0], fragment=None)
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            async with self.http.stream("POST", target, content=body, headers=headers, extensions=extensions) as r:
                if 200 <= r.status_code < 300:
                    return None, False
                if 300 <= r.status_code < 400:
                    return f"HTTP {r.status_code} (redirects are not followed)", False
                return f"HTTP {r.status_code}", False
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, False
