"""Is the worker in this container alive? ``srgan worker --alive`` (the Kubernetes liveness and startup probe
of a worker, and the image's HEALTHCHECK for a worker) answers from the worker's own heartbeat.

A worker names itself ``<hostname>.<pid>.<random>`` (``Presence`` in ``worker/presence.py``) and its heartbeat
thread refreshes ``<prefix>:alive:<name>`` every ``heartbeat_interval_s`` with a TTL of ``worker_dead_after_s``,
also while the main thread computes. The probe runs in the worker's container, so it shares the hostname: it
looks for a member of the queue's worker set named after this host whose ``alive`` key still exists. Two Redis
commands, no model, no torch.

Outcomes (:func:`heartbeat_state`, and :func:`exit_status` for the probe):

* ``alive`` (exit 0): a worker of this host has a fresh heartbeat;
* ``unknown`` (exit 0): Redis does not answer. Restarting the worker would not bring Redis back and would throw
  away its loaded models, so the probe passes; the ``SrganRedisDown`` alert is what says so;
* ``dead`` (exit 1): Redis answers and no worker of this host has a fresh heartbeat: the process is wedged, its
  heartbeat thread died, or it has not registered yet (why a startup probe with room for model loading runs
  before the liveness probe).
"""

from __future__ import annotations

import logging
import socket

__all__ = ["heartbeat_state", "exit_status"]

log = logging.getLogger(__name__)


def heartbeat_state(settings, host: str | None = None, timeout_s: float = 3.0) -> str:
    """``alive``, ``dead`` or ``unknown`` for the worker(s) of ``host`` (default: this host) on ``settings.queue``."""
    import redis

    from worker.jobs import Keys

    keys = Keys(settings.key_prefix, settings.queue)
    prefix = f"{host or socket.gethostname()}."
    conn = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in conn.smembers(keys.workers)]
        mine = [n for n in names if n.startswith(prefix)]
        fresh = conn.exists(*(keys.alive(n) for n in mine)) if mine else 0
    except redis.RedisError as e:
        log.warning("Redis does not answer (%s): the heartbeat cannot be read", e)
        return "unknown"
    finally:
        conn.close()
    return "alive" if fresh else "dead"


def exit_status(state: str) -> int:
    """The probe's exit status: 0 alive (or Redis down: not the worker's fault), 1 dead."""
    return 1 if state == "dead" else 0
