"""The gateway's Prometheus metrics (``GET /metrics``), defined once here.

Names start with ``srgan_`` and carry their unit; labels are small fixed sets (route templates, not paths;
model names; error codes). The worker's metrics are in ``worker/metrics.py`` on their own port.

With several gateway processes (``srgan serve --workers N``) ``PROMETHEUS_MULTIPROC_DIR`` is set and every
process writes its values there; whichever process answers a scrape sums them (``prometheus_client``'s
multiprocess mode). Gauges read at scrape time say the same in every process (``mostrecent``); the long-poll
waiters and the process count are per process and summed over the live ones (``livesum``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import parse_qs

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUESTS",
    "REQUEST_SECONDS",
    "LONG_POLL_SECONDS",
    "UPLOAD_BYTES",
    "JOBS_ENQUEUED",
    "JOBS_REJECTED",
    "QUEUE_DEPTH",
    "LIVE_WORKERS",
    "REGISTRY_ACTIONS",
    "ACTIVE_VERSION",
    "TRAINING_QUEUE_DEPTH",
    "LONG_POLL_WAITERS",
    "CLIENT_REQUESTS",
    "CLIENT_AUTH_FAILURES",
    "WEBHOOK_DELIVERIES",
    "GATEWAY_PROCESSES",
    "MetricsMiddleware",
    "render",
    "process_exiting",
    "route_template",
]

# No `_created` series: one more time series per counter and histogram child that no query here uses.
disable_created_metrics()

REQUESTS = Counter(
    "srgan_http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "srgan_http_request_duration_seconds",
    "Time to answer, by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LONG_POLL_SECONDS = Histogram(
    "srgan_http_long_poll_duration_seconds",
    "Time to answer a request that asked to wait (`wait` > 0: a long-poll), by route template; kept apart so "
    "that waits chosen by clients do not hide how fast the gateway answers",
    ["route"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
UPLOAD_BYTES = Histogram(
    "srgan_upload_bytes", "Size of accepted uploads", buckets=(1e3, 1e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8)
)
JOBS_ENQUEUED = Counter("srgan_jobs_enqueued_total", "Jobs accepted", ["model"])
JOBS_REJECTED = Counter("srgan_jobs_rejected_total", "Uploads refused, by error code", ["code"])
QUEUE_DEPTH = Gauge(
    "srgan_queue_depth_jobs", "Jobs waiting in the queue (read at scrape time)", multiprocess_mode="mostrecent"
)
LIVE_WORKERS = Gauge(
    "srgan_live_workers", "Workers with a fresh heartbeat (read at scrape time)", multiprocess_mode="mostrecent"
)
REGISTRY_ACTIONS = Counter(
    "srgan_registry_actions_total",
    "Admin actions on the model registry and training runs, "
    "by action (upload, promote, rollback, training_run, training_cancel, ...) and outcome "
    "(`ok` or the error code)",
    ["action", "outcome"],
)
ACTIVE_VERSION = Gauge(
    "srgan_registry_active_version",
    "Active registry version of each learned model (read at scrape time)",
    ["model", "scale"],
    multiprocess_mode="mostrecent",
)
LONG_POLL_WAITERS = Gauge(
    "srgan_long_poll_waiters", "Requests waiting on a job's change right now", multiprocess_mode="livesum"
)
TRAINING_QUEUE_DEPTH = Gauge(
    "srgan_training_queue_depth_runs", "Training runs waiting (read at scrape time)", multiprocess_mode="mostrecent"
)
GATEWAY_PROCESSES = Gauge(
    "srgan_gateway_processes", "Gateway processes serving this port (summed across them)", multiprocess_mode="livesum"
)
# Client keys (app/auth.py): a client is the first 12 hex digits of its key's sha256, never the key.
CLIENT_REQUESTS = Counter(
    "srgan_client_requests_total", "Requests with a valid client key, by client (its key's short sha256)", ["client"]
)
CLIENT_AUTH_FAILURES = Counter(
    "srgan_client_auth_failures_total", "Requests refused for want of a valid client key", ["reason"]
)
WEBHOOK_DELIVERIES = Counter(
    "srgan_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: `delivered`, `retry` (failed, tried again later), `failed` (given up)",
    ["outcome"],
)


def render() -> bytes:
    """The exposition text of a scrape: this process's registry, or the sum over all gateway processes."""
    from prometheus_client import CollectorRegistry, generate_latest

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return generate_latest()
    from prometheus_client import multiprocess

    for f in Path(path).glob("gauge_live*_*.db"):  # a process killed without its shutdown still had its files
        pid = f.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            multiprocess.mark_process_dead(int(pid), path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def process_exiting() -> None:
    """Drop this process's ``livesum`` gauges from the sum (those of a killed process are dropped at the next
    scrape, see :func:`render`)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def route_template(scope: Scope) -> str:
    """The template of the route that serves (or would serve) this request: the matched route's when the router
    ran, else the first route whose path matches (a middleware such as the upload or admin guard answered
    first; a PARTIAL match is a wrong method). ``unmatched``: no route has this path."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    partial = None
    for r in _leaf_routes(getattr(getattr(scope.get("app"), "router", None), "routes", ())):
        match, _ = r.matches(scope)
        if match is Match.FULL:
            return r.path
        if match is Match.PARTIAL and partial is None:
            partial = r.path
    return partial or "unmatched"


def _leaf_routes(routes):
    """The routes that have a path, inside included routers too (FastAPI keeps an included router whole, as an
    entry whose ``original_router`` holds its routes)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        elif getattr(r, "path", None):
            yield r


def _long_poll(scope: Scope) -> bool:
    """Whether the request asked to wait (``?wait=`` > 0, or an upload's ``Prefer: wait=N``)."""
    if scope["method"] == "POST":
        return any(k == b"prefer" and b"wait=" in v for k, v in scope.get("headers", ()))
    if b"wait=" not in scope.get("query_string", b""):
        return False
    try:
        return float(parse_qs(scope["query_string"].decode("latin-1")).get("wait", ["0"])[-1]) > 0
    except ValueError:
        return False


class MetricsMiddleware:
    """Counts and times every request under its route template (``/v1/jobs/{job_id}``), never the raw path,
    including the answers of the middlewares inside it (401, 403, 413, 415); long-polls are timed apart."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope)
            REQUESTS.labels(template, scope["method"], str(status)).inc()
            histogram = LONG_POLL_SECONDS if _long_poll(scope) else REQUEST_SECONDS
            histogram.labels(template).observe(time.perf_counter() - start)
