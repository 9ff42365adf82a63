"""Where a series' activation stack lives: the :class:`ActivePointer` protocol and :class:`FilePointer`, which
keeps it in the models directory's ``ACTIVE.json`` files (the service's Redis pointer, mirrored into the same
files, is ``worker/registry.py``). See :mod:`model.registry` for what the stack means."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from model.clock import iso_now

__all__ = ["ActivePointer", "FilePointer", "STACK_LIMIT"]

log = logging.getLogger(__name__)

STACK_LIMIT = 100  # activations remembered per series (rollback depth)


class ActivePointer(Protocol):
    def stack(self, series: str) -> list[int]:
        """The series' activation stack, oldest first (empty: never promoted)."""

    def active_map(self) -> dict[str, int]:
        """Top of every non-empty stack: series -> active version."""

    def update(self, series: str, change: Callable[[list[int]], list[int]], event: dict[str, Any]) -> list[int]:
        """Replace the stack by ``change(stack)`` atomically and tell whoever listens (``event`` describes
        it); returns the new stack."""


class FilePointer:
    """Activation stacks in ``ACTIVE.json`` files of the models directory (flock-serialised writers)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, series: str) -> Path:
        return self.root / series / "ACTIVE.json"

    def stack(self, series: str) -> list[int]:
        try:
            data = json.loads(self._path(series).read_text())
            return [int(v) for v in data.get("stack", [])]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s); treating %s as never promoted", self._path(series), e, series)
            return []

    def active_map(self) -> dict[str, int]:
        out = {}
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.is_dir() and not d.name.startswith("."):
                    stack = self.stack(d.name)
                    if stack:
                        out[d.name] = stack[-1]
        return out

    def write(self, series: str, stack: list[int], event: dict[str, Any] | None = None) -> None:
        path = self._path(series)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "series": series,
            "active": stack[-1] if stack else None,
            "stack": stack[-STACK_LIMIT:],
            "updated": iso_now(),
            "by": (event or {}).get("by"),
        }
        tmp = path.with_name(f".ACTIVE.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(path)

    @contextlib.contextmanager
    def locked(self, series: str) -> Iterator[None]:
        lock = self.root / series / ".lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def update(self, series: str, change: Callable[[list[int]], list[int]], event: dict[str, Any]) -> list[int]:
        with self.locked(series):
            stack = change(self.stack(series))
            self.write(series, stack, event)
        return stack


# -- records -----------------------------------------------------------------------------------------------
