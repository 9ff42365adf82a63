"""Which key a request path takes: the rule the gateway's guards (``app/admin.py``, ``app/auth.py``) and the
client (``app/client``) share. No imports: the client installs without the server."""

from __future__ import annotations

__all__ = ["is_admin_path"]


def is_admin_path(path: str) -> bool:
    """Everything under ``/v1/models/`` (not the public ``/v1/models`` list) and ``/v1/training-runs``: the admin
    key's routes. Every other ``/v1/`` path takes a client key (when the gateway has any)."""
    return path.startswith("/v1/models/") or path == "/v1/training-runs" or path.startswith("/v1/training-runs/")
