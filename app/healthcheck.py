"""``python -m app.healthcheck [COMMAND...]``: the image's HEALTHCHECK. It checks the role this container runs,
read from the command line of its PID 1 (or given as arguments):

* ``srgan serve``: the gateway answers ``GET /healthz`` on its port;
* ``srgan worker``: the worker's heartbeat is fresh (``srgan worker --alive``, see ``worker/health.py``);
* anything else (a one-off ``srgan`` command): healthy.

Exit status 0 healthy, 1 not.
"""

from __future__ import annotations

import sys

__all__ = ["role", "main"]


def role(argv: list[str]) -> tuple[str | None, list[str]]:
    """(``serve`` | ``worker`` | None, the arguments after it) from a command line like ``srgan worker --queue x``."""
    for i, arg in enumerate(argv):
        if arg in ("serve", "worker"):
            return arg, argv[i + 1 :]
    return None, []


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _pid1() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    which, args = role(argv if argv else _pid1())
    if which == "worker":
        from app.cli import main as srgan

        extra = [o for name in ("--queue", "--redis-url") if (v := _option(args, name)) for o in (name, v)]
        return srgan(["worker", "--alive", *extra])
    if which == "serve":
        import httpx

        from app.config import Settings

        port = _option(args, "--port") or Settings().port
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError as e:
            print(f"gateway on :{port} does not answer: {e}")
            return 1
        print(f"gateway on :{port}: {'ok' if ok else 'not ok'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
