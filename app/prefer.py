"""The ``Prefer`` request header (RFC 7240): the one preference the gateway honours, ``wait``."""

from __future__ import annotations

__all__ = ["preferred_wait"]


def preferred_wait(header: str | None, cap: float) -> float | None:
    """Seconds of a ``Prefer: wait=N`` (among other preferences, each ``token[=value][; params]``, comma
    separated), capped at ``cap``; None when there is no valid one (what a server does not understand it
    ignores, as RFC 7240 says)."""
    if not header:
        return None
    for pref in header.split(","):
        name, _, value = pref.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if value.isdigit():  # delta-seconds: digits only
            return min(float(value), cap)
    return None
