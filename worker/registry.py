"""The registry as the service runs it: activation stacks in Redis, announced on a pub/sub channel.

``model/registry.py`` owns the versions and their files; this module gives it a Redis-kept
:class:`RedisPointer` so every gateway and worker sees the same active versions, and promotions reach the
workers at once. Every change is mirrored into the models directory's ``ACTIVE.json`` files, which also
re-seed Redis when it lost its keys (a restart without persistence, as ``srgan up``'s embedded Redis runs),
so a promotion survives Redis and the command line (``srgan upscale``) agrees with the workers.

Redis keys (prefix ``Settings.key_prefix``)::

    <prefix>:models:active          hash: series (espcn_x4) -> active version
    <prefix>:models:stack:<series>  list: the activation stack, oldest first
    <prefix>:models:lock:<series>   short lock around a change
    <prefix>:models:events          pub/sub channel: {"series", "version", "action", "by"} after each change
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from model.registry import FilePointer, Registry

__all__ = ["RedisPointer", "open_registry", "channel"]

log = logging.getLogger(__name__)


def channel(prefix: str) -> str:
    return f"{prefix}:models:events"


class RedisPointer:
    """Activation stacks in Redis (atomic under a per-series lock), mirrored into ``ACTIVE.json`` files."""

    def __init__(self, connection, prefix: str, mirror: FilePointer):
        self.conn = connection
        self.prefix = prefix
        self.mirror = mirror
        self.active_key = f"{prefix}:models:active"
        self.channel = channel(prefix)

    def _stack_key(self, series: str) -> str:
        return f"{self.prefix}:models:stack:{series}"

    def _lock(self, series: str):
        return self.conn.lock(f"{self.prefix}:models:lock:{series}", timeout=30, blocking_timeout=30)

    def stack(self, series: str) -> list[int]:
        stack = [int(v) for v in self.conn.lrange(self._stack_key(series), 0, -1)]
        if not stack and self.mirror.stack(series):
            stack = self._seed(series)
        return stack

    def active_map(self) -> dict[str, int]:
        out = {k.decode(): int(v) for k, v in self.conn.hgetall(self.active_key).items()}
        for series in set(self.mirror.active_map()) - set(out):
            stack = self._seed(series)
            if stack:
                out[series] = stack[-1]
        return out

    def _seed(self, series: str) -> list[int]:
        """Redis has no stack for ``series`` but the models directory does: copy it back (once)."""
        with self._lock(series):
            stack = [int(v) for v in self.conn.lrange(self._stack_key(series), 0, -1)]
            if stack:
                return stack
            stack = self.mirror.stack(series)
            if stack:
                self._write(series, stack, None)
                log.warning(
                    "registry: Redis had no active version of %s; restored version %d from %s",
                    series,
                    stack[-1],
                    self.mirror.root,
                )
            return stack

    def _write(self, series: str, stack: list[int], event: dict[str, Any] | None) -> None:
        with self.conn.pipeline() as pipe:
            pipe.delete(self._stack_key(series))
            if stack:
                pipe.rpush(self._stack_key(series), *stack)
                pipe.hset(self.active_key, series, stack[-1])
            else:
                pipe.hdel(self.active_key, series)
            if event is not None:
                pipe.publish(
                    self.channel, json.dumps({**event, "series": series, "version": stack[-1] if stack else None})
                )
            pipe.execute()

    def update(self, series: str, change: Callable[[list[int]], list[int]], event: dict[str, Any]) -> list[int]:
        with self._lock(series):
            stack = change(self.stack(series))
            self._write(series, stack, event)
            try:
                self.mirror.write(series, stack, event)
            except OSError as e:  # Redis has it; the next change (or a re-seed) rewrites the file
                log.error("registry: could not mirror %s's active version into %s: %s", series, self.mirror.root, e)
        return stack


def open_registry(settings, connection=None) -> Registry:
    """The service's registry: ``settings.models_dir`` with activations in Redis."""
    from model.registry import models_dir

    root = settings.models_dir or models_dir()
    conn = connection if connection is not None else settings.redis()
    files = FilePointer(root)
    return Registry(
        root,
        pointer=RedisPointer(conn, settings.key_prefix, files),
        gate_dir=settings.gate_dir,
        gate_tolerance_db=settings.gate_tolerance_db,
    )
