"""Where uploads and results live while a job needs them: one small interface, two backends.

* :class:`RedisStorage` (default): one key per blob with a TTL. Writes can join a caller's pipeline, so the
  gateway stores an upload and enqueues its job in one round trip, atomically.
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
    pipelined: bool  # Redis-backed: ``key()`` names the blobs and ``pipeline=`` is honoured

    def put(self, kind: str, job_id: str, data: bytes, ttl_s: int, pipeline=None) -> None:
        """Store ``data`` for ``ttl_s`` seconds (in ``pipeline`` when the backend is Redis and one is given)."""

    def get(self, kind: str, job_id: str) -> bytes | None:
        """The blob, or None when it never existed or has expired."""

    def get_many(self, kind: str, job_ids: list[str]) -> list[bytes | None]: ...

    def delete(self, kind: str, job_id: str, pipeline=None) -> None: ...

    def sweep(self) -> int:
        """Delete expired blobs that the backend does not expire by itself; returns how many."""


class RedisStorage:
    pipelined = True  # writes and reads can join a Redis pipeline

    def __init__(self, connection, key_prefix: str):
        self.connection = connection
        self.prefix = key_prefix

    def key(self, kind: str, job_id: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        return f"{self.prefix}:{kind}:{job_id}"

    def put(self, kind: str, job_id: str, data: bytes, ttl_s: int, pipeline=None) -> None:
        (pipeline if pipeline is not None else self.connection).set(self.key(kind, job_id), data, ex=int(ttl_s))

    def get(self, kind: str, job_id: str) -> bytes | None:
        return self.connection.get(self.key(kind, job_id))

    def get_many(self, kind: str, job_ids: list[str]) -> list[bytes | None]:
        return self.connection.mget([self.key(kind, j) for j in job_ids]) if job_ids else []

    def delete(self, kind: str, job_id: str, pipeline=None) -> None:
        (pipeline if pipeline is not None else self.connection).delete(self.key(kind, job_id))

    def sweep(self) -> int:
        return 0  # Redis expires keys itself


class DirStorage:
    pipelined = False

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


def make_storage(settings, connection) -> Storage:
    if settings.storage == "dir":
        if settings.storage_dir is None:
            raise ValueError(
                "SRGAN_STORAGE=dir needs SRGAN_STORAGE_DIR (a directory the gateway and the workers share)"
            )
        return DirStorage(settings.storage_dir)
    return RedisStorage(connection, settings.key_prefix)
