"""Where uploads and results live while a job needs them: one small interface, two backends.

* :class:`RedisStorage` (default): one key per blob with a TTL, in the queue's Redis. Its keys are part of the
  interface (:meth:`Storage.redis_key`), so the job lifecycle (``worker/jobs.py``) stores an upload with its
  job, and a result with its job's end, in the same atomic step.
* :class:`DirStorage`: files in a directory that gateway and workers share (large images, several hosts on
  one volume). A file's modification time is set to its expiry time; reads treat an expired file as gone and
  :meth:`DirStorage.sweep` (run by every worker's maintenance) deletes them.

Blobs are addressed by ``(kind, job_id)`` where kind is ``"input"``, ``"result"`` or ``"samples"`` (the latest
sample grid of a training run).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Protocol

__all__ = ["Storage", "RedisStorage", "DirStorage", "make_storage", "KINDS"]

KINDS = ("input", "result", "samples")


class Storage(Protocol):
    def redis_key(self, kind: str, job_id: str) -> str | None:
        """The key holding the blob when blobs live in the queue's Redis (``SET`` with ``EX``); None when not."""

    def put(self, kind: str, job_id: str, data: bytes, ttl_s: int, pipeline=None) -> None:
        """Store ``data`` for ``ttl_s`` seconds: in Redis, as part of ``pipeline`` when one is given; elsewhere at
        once (before the pipeline that refers to it runs)."""

    def get(self, kind: str, job_id: str) -> bytes | None:
        """The blob, or None when it never existed or has expired."""

    async def aget(self, kind: str, job_id: str) -> bytes | None:
        """:meth:`get` for a coroutine: without blocking the event loop."""

    def get_many(self, kind: str, job_ids: list[str]) -> list[bytes | None]: ...

    def delete(self, kind: str, job_id: str, pipeline=None) -> None: ...

    def sweep(self) -> int:
        """Delete expired blobs that the backend does not expire by itself; returns how many."""


class RedisStorage:
    def __init__(self, connection, key_prefix: str, aconnection=None):
        self.connection = connection
        self.aconnection = aconnection  # redis.asyncio client for aget (the gateway sets it)
        self.prefix = key_prefix

    def redis_key(self, kind: str, job_id: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        return f"{self.prefix}:{kind}:{job_id}"

    def put(self, kind: str, job_id: str, data: bytes, ttl_s: int, pipeline=None) -> None:
        (pipeline if pipeline is not None else self.connection).set(self.redis_key(kind, job_id), data, ex=int(ttl_s))

    def get(self, kind: str, job_id: str) -> bytes | None:
        return self.connection.get(self.redis_key(kind, job_id))

    async def aget(self, kind: str, job_id: str) -> bytes | None:
        return await self.aconnection.get(self.redis_key(kind, job_id))

    def get_many(self, kind: str, job_ids: list[str]) -> list[bytes | None]:
        return self.connection.mget([self.redis_key(kind, j) for j in job_ids]) if job_ids else []

    def delete(self, kind: str, job_id: str, pipeline=None) -> None:
        (pipeline if pipeline is not None else self.connection).delete(self.redis_key(kind, job_id))

    def sweep(self) -> int:
        return 0  # Redis expires keys itself


class DirStorage:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, job_id: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise ValueError(f"bad job id {job_id!r}")
        return self.root / kind / job_id

    def put(self, kind: str, job_id: str, data: bytes, ttl_s: int, pipeline=None) -> None:
        target = self.path(kind, job_id)
        tmp = target.with_name(f".{job_id}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        expires = time.time() + ttl_s
        os.utime(tmp, (expires, expires))
        os.replace(tmp, target)  # readers never see a half-written file

    def get(self, kind: str, job_id: str) -> bytes | None:
        p = self.path(kind, job_id)
        try:
            if p.stat().st_mtime < time.time():
                p.unlink(missing_ok=True)
                return None
            return p.read_bytes()
        except FileNotFoundError:
            return None

    def redis_key(self, kind: str, job_id: str) -> None:
        return None

    async def aget(self, kind: str, job_id: str) -> bytes | None:
        import asyncio

        return await asyncio.to_thread(self.get, kind, job_id)

    def get_many(self, kind: str, job_ids: list[str]) -> list[bytes | None]:
        return [self.get(kind, j) for j in job_ids]

    def delete(self, kind: str, job_id: str, pipeline=None) -> None:
        self.path(kind, job_id).unlink(missing_ok=True)

    def sweep(self) -> int:
        now, n = time.time(), 0
        for kind in KINDS:
            for p in (self.root / kind).iterdir():
                try:
                    # Expired blobs, and temporary files a killed writer left behind (older than a day).
                    if p.stat().st_mtime < (now - 86400 if p.name.endswith(".tmp") else now):
                        p.unlink(missing_ok=True)
                        n += 1
                except FileNotFoundError:
                    pass
        return n


def make_storage(settings, connection, aconnection=None) -> Storage:
    if settings.storage == "dir":
        if settings.storage_dir is None:
            raise ValueError(
                "SRGAN_STORAGE=dir needs SRGAN_STORAGE_DIR (a directory the gateway and the workers share)"
            )
        return DirStorage(settings.storage_dir)
    return RedisStorage(connection, settings.key_prefix, aconnection)
