"""Waiting out a Redis outage: exponential backoff with jitter, and one log line when it starts and one when it
ends (not one per retry). Used by the workers' loops and threads and by the gateway's event listener."""

from __future__ import annotations

import logging
import random
import time

__all__ = ["Backoff", "REDIS_DOWN"]

# What a Redis client raises while the server is unreachable, restarting or still loading its data; anything
# else (a bad command, a script error) is a bug to report, not an outage to wait out.
REDIS_DOWN: tuple[type[BaseException], ...]
try:
    import redis

    REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)
except ImportError:  # a client-only install
    REDIS_DOWN = (ConnectionError, TimeoutError)


class Backoff:
    """Delays of ``first``, doubling up to ``cap`` seconds, each with +-25 % jitter; :meth:`failed` returns the
    next delay (and logs the first failure), :meth:`succeeded` resets (and logs the recovery)."""

    def __init__(self, what: str, log: logging.Logger, *, first: float = 0.1, cap: float = 5.0):
        self.what = what
        self.log = log
        self.first = first
        self.cap = cap
        self.delay = first
        self.since: float | None = None  # when the current outage began (monotonic), None when all is well
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> float:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s: Redis does not answer (%s); retrying with backoff", self.what, error)
        self.failures += 1
        delay = self.delay * random.uniform(0.75, 1.25)
        self.delay = min(self.cap, self.delay * 2)
        return delay

    def succeeded(self) -> float | None:
        """Returns how long the outage lasted (None when there was none)."""
        if self.since is None:
            return None
        lasted = time.monotonic() - self.since
        self.log.warning("%s: Redis answers again after %.1f s (%d failed attempts)", self.what, lasted, self.failures)
        self.since, self.delay, self.failures = None, self.first, 0
        return lasted
