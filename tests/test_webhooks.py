"""Webhooks against a real gateway, worker and Redis, and a real HTTP receiver in this process: each end
(finished, failed, canceled) is POSTed once, signed; failures are retried with growing delays, for a bounded
time; the delivery shows in the job; a delivery survives the gateway being SIGKILLed (before the job ends, and in
the middle of an attempt); private and loopback callback addresses are refused unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.servicekit import assert_error, photo, png, wait_for

pytestmark = pytest.mark.timeout(300)
SECRET = "whsec-" + "s" * 26


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST (time, headers, body) and answers with the next of
    ``script`` (a status, or ``"hang"``: no answer for a minute), then 200 for ever."""

    def __init__(self, script: list[int | str] | None = None):
        self.script = list(script or [])
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.cond:
                    outer.got.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                    answer = outer.script.pop(0) if outer.script else 200
                    outer.cond.notify_all()
                if answer == "hang":
                    time.sleep(60)
                    return
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/srgan?tenant=7"

    def wait(self, n: int, timeout: float = 60) -> list[tuple[float, dict[str, str], bytes]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout), f"{len(self.got)} of {n} deliveries"
            return list(self.got)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def receiver():
    made: list[Receiver] = []

    def make(script=None) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def hooked(stack_factory, **settings):
    return stack_factory(["bicubic"], webhook_secret=SECRET, webhook_allow_private=True, **settings)


@pytest.fixture(scope="module")
def stack(stack_factory):
    return hooked(stack_factory, webhook_backoff_s=0.4, worker_lazy_load=False)


def submit(st, url: str, model: str = "bicubic", size=(10, 12), gateway: str | None = None) -> httpx.Response:
    return httpx.post(f"{gateway or st.url}/v1/upscale", files={"file": ("a.png", png(photo(size=size)))},
                      data={"model": model, "callback_url": url}, timeout=60)  # fmt: skip


def verify(headers: dict[str, str], body: bytes) -> None:
    """What the README tells receivers to do."""
    fields = dict(part.split("=", 1) for part in headers["srgan-signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert abs(time.time() - int(fields["t"])) < 120


def webhook_of(st, job_id: str) -> dict:
    return httpx.get(f"{st.url}/v1/jobs/{job_id}", timeout=30).json()["webhook"]


def settled(st, job_id: str, status: str) -> dict:
    return wait_for(lambda: (w := webhook_of(st, job_id))["status"] == status and w, 60, f"webhook {status}")


def test_a_finished_job_is_delivered_once_signed(stack, receiver):
    rx = receiver()
    r = submit(stack, rx.url)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["webhook"] == {"url": rx.url, "status": "pending", "attempts": 0, "last_error": None,
                              "last_attempt_at": None, "next_attempt_at": None, "delivered_at": None}  # fmt: skip
    (_, headers, body), *_ = rx.wait(1)
    verify(headers, body)
    sent = json.loads(body)
    assert sent["id"] == job["id"] and sent["status"] == "finished" and sent["output"]["width"] == 48
    assert headers["srgan-event"] == "job.finished" and headers["srgan-delivery"] == job["id"]
    assert headers["content-type"] == "application/json" and headers["host"] == rx.url.split("/")[2]
    hook = settled(stack, job["id"], "delivered")
    assert hook["attempts"] == 1 and hook["delivered_at"] and hook["last_error"] is None
    assert len(rx.got) == 1
    assert stack.redis.client.zcard(f"t-{stack.env['SRGAN_QUEUE']}:webhooks:{stack.env['SRGAN_QUEUE']}") == 0


def test_failed_and_canceled_jobs_are_delivered_too(stack, stack_factory, receiver):
    rx = receiver()
    failed = submit(stack, rx.url, model="bilinear").json()["id"]  # the worker does not serve it: fails
    (_, headers, body), *_ = rx.wait(1)
    verify(headers, body)
    assert headers["srgan-event"] == "job.failed" and json.loads(body)["id"] == failed
    assert json.loads(body)["status"] == "failed" and json.loads(body)["error"]["code"] == "model_not_served"
    idle = hooked(stack_factory, workers=0, ready=False)  # no worker: the job stays queued until canceled
    canceled = submit(idle, rx.url).json()["id"]
    assert httpx.delete(f"{idle.url}/v1/jobs/{canceled}").status_code == 200
    _, (_, headers, body) = rx.wait(2)
    verify(headers, body)
    assert headers["srgan-event"] == "job.canceled" and json.loads(body)["id"] == canceled
    assert settled(idle, canceled, "delivered")["attempts"] == 1


def test_failures_are_retried_with_growing_delays(stack, receiver):
    rx = receiver([500, 503, "200"])
    jid = submit(stack, rx.url).json()["id"]
    rx.wait(1)
    # An ended job's long-poll with If-None-Match wakes on its webhook's progress too.
    r = httpx.get(f"{stack.url}/v1/jobs/{jid}", timeout=30)
    changed = httpx.get(f"{stack.url}/v1/jobs/{jid}", params={"wait": 30}, headers={"If-None-Match": r.headers["etag"]},
                        timeout=60)  # fmt: skip
    assert changed.status_code == 200 and changed.json()["webhook"] != r.json()["webhook"], changed.status_code
    hook = wait_for(lambda: (w := webhook_of(stack, jid))["attempts"] >= 1 and w, 30, "the first attempt recorded")
    if hook["attempts"] == 1:  # seen between the first and second attempts
        assert hook["status"] == "pending" and hook["last_error"] == "HTTP 500" and hook["next_attempt_at"]
    got = rx.wait(3)
    hook = settled(stack, jid, "delivered")
    assert hook["attempts"] == 3 and hook["last_error"] is None
    (t1, _, b1), (t2, _, b2), (t3, _, b3) = got[:3]
    assert json.loads(b1)["id"] == json.loads(b2)["id"] == json.loads(b3)["id"] == jid
    first, second = t2 - t1, t3 - t2
    assert first >= 0.4 and second >= 0.8, (first, second)  # SRGAN_WEBHOOK_BACKOFF_S, then twice that (+ jitter)


def test_retries_stop_after_the_retry_window(stack_factory, receiver):
    st = hooked(stack_factory, webhook_backoff_s=0.2, webhook_retry_for_s=1.5)
    rx = receiver([500] * 100)
    jid = submit(st, rx.url).json()["id"]
    hook = settled(st, jid, "failed")
    n = len(rx.got)
    assert 2 <= hook["attempts"] == n <= 5 and hook["last_error"] == "HTTP 500" and hook["next_attempt_at"] is None
    assert st.redis.client.zcard(f"t-{st.env['SRGAN_QUEUE']}:webhooks:{st.env['SRGAN_QUEUE']}") == 0  # no more due


def test_a_delivery_survives_the_gateway_being_killed(stack_factory, receiver):
    st = hooked(stack_factory, workers=0, ready=False, webhook_timeout_s=1)
    rx = receiver(["hang"])
    jid = submit(st, rx.url).json()["id"]
    # 1. The job ends while no gateway runs: its delivery waits in Redis.
    st.gateway.signal(signal.SIGKILL)
    st.gateway.proc.wait(30)
    st.add_worker(["bicubic"])
    key = f"t-{st.env['SRGAN_QUEUE']}:webhooks:{st.env['SRGAN_QUEUE']}"
    wait_for(lambda: st.redis.client.zcard(key) == 1, 60, "the job's end to queue its webhook")
    assert rx.got == []
    # 2. A gateway starts and delivers it; the receiver hangs; the gateway is killed mid-attempt.
    st.gateway.start()
    rx.wait(1)
    st.gateway.signal(signal.SIGKILL)
    st.gateway.proc.wait(30)
    # 3. The next gateway finds the lapsed claim and delivers again.
    st.gateway.start()
    got = rx.wait(2, timeout=90)
    verify(got[1][1], got[1][2])
    assert json.loads(got[1][2])["id"] == jid and json.loads(got[1][2])["status"] == "finished"
    st.wait_ready(ready=True)
    hook = settled(st, jid, "delivered")
    assert hook["attempts"] == 1  # the killed attempt was never recorded: at least once, counted when known


def test_private_and_loopback_callbacks_are_refused_unless_allowed(stack_factory):
    st = stack_factory(["bicubic"], workers=0, ready=False, webhook_secret=SECRET)
    refused = [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fd00::1]/x",
        "http://[64:ff9b::a00:1]/x",
    ]
    for url in refused:
        err = assert_error(submit(st, url), 422, "callback_url_refused")
        assert "public addresses only" in err["message"], (url, err)
    for url, why in [("ftp://example.com/x", "http:// or https://"), ("http://u:p@8.8.8.8/x", "credentials"),
                     ("http://no-such-host.invalid/x", "does not resolve"), ("not a url", "http:// or https://")]:  # fmt: skip
        err = assert_error(submit(st, url), 422, "callback_url_refused")
        assert why in err["message"], (url, err)
    ok = submit(st, "https://8.8.8.8/hooks")  # public: accepted (this machine has no internet; it will fail later)
    assert ok.status_code == 202 and ok.json()["webhook"]["url"] == "https://8.8.8.8/hooks"
    # Allowed by the setting: the same loopback address is taken.
    _, url = st.add_gateway(webhook_allow_private=True)
    assert submit(st, "http://127.0.0.1:9/x", gateway=url).status_code == 202
    # Without a secret nothing is signed, so nothing is sent: refused at the door.
    _, url = st.add_gateway(webhook_secret="")
    assert_error(submit(st, "https://8.8.8.8/hooks", gateway=url), 422, "webhooks_disabled")


def test_only_a_gateway_with_the_secret_looks_for_due_deliveries():
    """Without SRGAN_WEBHOOK_SECRET a gateway takes no callback_url (422 webhooks_disabled) and delivers
    nothing, so it does not poll the webhook queue either; with it, the delivery loop runs."""
    import asyncio

    from app.config import Settings
    from app.webhooks import WebhookSender

    async def started(secret: str | None) -> bool:
        sender = WebhookSender(Settings(webhook_secret=secret), None, lambda rec: b"")  # type: ignore[arg-type]
        await sender.start()
        running = sender._task is not None
        await sender.close()
        return running

    assert asyncio.run(started(None)) is False
    assert asyncio.run(started("s3cret-s3cret-s3cret")) is True
