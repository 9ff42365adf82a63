"""Client API keys: with ``SRGAN_API_KEYS`` and/or ``SRGAN_API_KEYS_FILE`` set, every ``/v1/`` request except
the public model list (and the admin routes, which take the admin key instead) needs
``Authorization: Bearer <client key>``; without them the gateway is open (the default, for a laptop).

Public in either mode: ``GET /v1/models`` (what can be asked for), the web page ``/``, ``/healthz``,
``/readyz``, ``/metrics``, ``/docs``, ``/redoc`` and ``/openapi.json``; ``OPTIONS`` on any path (it only tells
the allowed methods).

Keys are held as sha256 digests only and compared digest to digest in constant time (``hmac.compare_digest``
against every configured key, never stopping early); a key is never logged. A client is known by the first 12
hex digits of its key's sha256 (``request.state.client``, :data:`app.deps.ClientDep`; ``None`` in open mode),
which labels the per-client request counter. The keys file holds one key per line, or its sha256 as
``sha256:<64 hex>`` or 64 bare hex digits (so a key itself must not be 64 hex digits); ``#`` starts a comment.
It is re-read when it changes (checked at most once a second), so keys rotate without a restart; if it
becomes unreadable the last good set stays in force.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.admin import is_admin_path
from app.errors import error_response

__all__ = ["ClientKeys", "ClientGuard", "needs_client_key", "client_id", "PUBLIC_V1_PATHS"]

log = logging.getLogger(__name__)
PUBLIC_V1_PATHS = frozenset({"/v1/models"})
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="srgan"'}
_RECHECK_S = 1.0


def needs_client_key(path: str) -> bool:
    """Whether a request to ``path`` needs a client key when keys are configured."""
    return path.startswith("/v1/") and path not in PUBLIC_V1_PATHS and not is_admin_path(path)


def client_id(digest: bytes) -> str:
    """The name a client goes by (in metrics and ``request.state.client``): 12 hex digits of its key's sha256."""
    return digest.hex()[:12]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_file(text: str, source: str) -> list[bytes]:
    digests = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        hexed = line[7:] if line.lower().startswith("sha256:") else line
        if _HEX64.match(hexed):
            digests.append(bytes.fromhex(hexed))
        elif line.lower().startswith("sha256:"):
            raise ValueError(f"{source} line {n}: `sha256:` must be followed by 64 hex digits")
        else:
            if len(line) < 16:
                log.warning("%s line %d: a client key of %d characters is easy to guess", source, n, len(line))
            digests.append(_digest(line))
    return digests


class ClientKeys:
    """The configured client keys (as digests); :attr:`enabled` is False in open mode."""

    def __init__(self, keys: str = "", file: Path | None = None, admin_key: str = ""):
        self.file = file
        self._inline = [_digest(k.strip()) for k in keys.split(",") if k.strip()]
        self._from_file: list[bytes] = []
        self._admin = _digest(admin_key) if admin_key else None
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.enabled = bool(self._inline) or file is not None
        if file is not None:
            self._load(startup=True)
        self._check_admin(self._inline + self._from_file)
        if self.enabled:
            log.info(
                "client keys: %d (%d from SRGAN_API_KEYS, %d from %s)",
                len(self.digests),
                len(self._inline),
                len(self._from_file),
                file or "no file",
            )

    @classmethod
    def from_settings(cls, settings) -> ClientKeys:
        secret = lambda s: s.get_secret_value() if s is not None else ""  # noqa: E731
        return cls(secret(settings.api_keys), settings.api_keys_file, secret(settings.admin_key))

    @property
    def digests(self) -> list[bytes]:
        return self._inline + self._from_file

    def _check_admin(self, digests: list[bytes]) -> None:
        if self._admin is not None and any(hmac.compare_digest(d, self._admin) for d in digests):
            raise ValueError("SRGAN_ADMIN_KEY is also a client key: the admin key must stay separate")

    def _load(self, startup: bool = False) -> None:
        """(Re-)read the keys file if it changed; at startup a missing file is an error, later it keeps the keys."""
        try:
            assert self.file is not None
            st = os.stat(self.file)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            digests = _parse_file(self.file.read_text(), str(self.file))
            self._check_admin(digests)
        except (OSError, ValueError) as e:
            if startup:
                raise ValueError(f"SRGAN_API_KEYS_FILE: {e}") from None
            log.warning("client keys file %s: %s; keeping the %d keys read before", self.file, e, len(self._from_file))
            return
        self._from_file, self._stamp = digests, stamp
        if not startup:
            log.info("client keys file %s re-read: %d keys", self.file, len(digests))

    def identify(self, token: str) -> str | None:
        """The client id of ``token``, or None when it is no client key (constant time in which key matched)."""
        if self.file is not None and time.monotonic() - self._checked > _RECHECK_S:
            self._checked = time.monotonic()
            self._load()
        digest = _digest(token)
        found = None
        for d in self.digests:
            if hmac.compare_digest(d, digest):
                found = d
        return client_id(found) if found is not None else None


class ClientGuard:
    """Refuses requests that need a client key and lack a valid one (401) before their body is read; sets
    ``scope["state"]["client"]`` for the routes (None in open mode or on public paths)."""

    def __init__(self, app: ASGIApp, keys: ClientKeys):
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["client"] = None
        if self.keys.enabled and scope["method"] != "OPTIONS" and needs_client_key(scope["path"]):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            client = self.keys.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if client is None:
                reason = "missing" if not header else "invalid"
                metrics.CLIENT_AUTH_FAILURES.labels(reason).inc()
                message = (
                    "send your client key: `Authorization: Bearer <key>`"
                    if reason == "missing"
                    else "the client key is not valid (send `Authorization: Bearer <key>`)"
                )
                headers = dict(_CHALLENGE)
                if scope["method"] not in ("GET", "HEAD"):
                    headers["Connection"] = "close"  # the unread body is not drained
                await error_response(401, "unauthorized", message, headers)(scope, receive, send)
                return
            state["client"] = client
            metrics.CLIENT_REQUESTS.labels(client).inc()
        await self.app(scope, receive, send)
