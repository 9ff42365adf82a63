"""``srgan models list|upload|promote|rollback``: the model registry from the command line.

By default the commands talk to a running gateway (``--url``) with the admin key (``--admin-key``, else
``SRGAN_ADMIN_KEY``). With ``--local`` they work on the registry directly, as the gateway does: the models
directory (``SRGAN_MODELS_DIR``) and Redis (``SRGAN_REDIS_URL``, whose pub/sub tells the workers), e.g. on the
gateway's host when the admin API is disabled.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="model versions: list, upload, promote, roll back",
        description="The model registry: versions of each model and which one serves. Talks to the "
        "gateway's admin API (--url, --admin-key or SRGAN_ADMIN_KEY), or with --local "
        "to the models directory and Redis directly.",
    )
    msub = p.add_subparsers(dest="models_command", required=True, metavar="{list,upload,promote,rollback}")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--url",
            default=os.environ.get("SRGAN_URL", "http://127.0.0.1:8000"),
            help="the gateway (default: $SRGAN_URL or %(default)s)",
        )
        q.add_argument("--admin-key", help="the gateway's SRGAN_ADMIN_KEY (default: $SRGAN_ADMIN_KEY)")
        q.add_argument(
            "--local",
            action="store_true",
            help="use the models directory and Redis of this machine's settings instead of a gateway",
        )
        q.add_argument("--scale", "-s", type=int, help="scale, when NAME does not say it (NAME_xSCALE)")
        q.add_argument("--json", action="store_true", help="print the answer as JSON")

    q = msub.add_parser("list", help="models and their active versions, or every version of one model")
    q.add_argument("name", nargs="?", help="a model (espcn, or espcn_x2): list its versions")
    common(q)
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("upload", help="register weights as a new version (checked, smoke-tested and gated)")
    q.add_argument("name", help="model name (the scale is the card's), or NAME_xSCALE")
    q.add_argument("weights", type=Path, help="the .safetensors file")
    q.add_argument("--card", type=Path, help="its model card (default: the .json beside the weights)")
    q.add_argument("--force", action="store_true", help="register it even below the quality gate")
    q.add_argument("--promote", action="store_true", help="make it active if it passes the gate")
    q.add_argument("--by", help="who (recorded; default: USER@HOST)")
    q.add_argument("--notes", default="", help="free text kept with the version")
    common(q)
    q.set_defaults(func=cmd_upload)

    q = msub.add_parser("promote", help="make a version active; workers switch without a restart")
    q.add_argument("name")
    q.add_argument("version", type=int)
    q.add_argument("--by", help="who (recorded; default: USER@HOST)")
    q.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the workers to switch (default: %(default)s; not with --local)",
    )
    common(q)
    q.set_defaults(func=cmd_promote)

    q = msub.add_parser("rollback", help="go back to the version that was active before the current one")
    q.add_argument("name")
    q.add_argument("--by", help="who (recorded; default: USER@HOST)")
    q.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the workers to switch")
    common(q)
    q.set_defaults(func=cmd_rollback)


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "cli"


def _series(name: str, scale: int | None, default: int | None) -> tuple[str, int | None]:
    from model.specs import parse_series

    base, named = parse_series(name)
    return base, named if named is not None else scale if scale is not None else default


def _client(args: argparse.Namespace):
    from app.client import Client

    key = args.admin_key or os.environ.get("SRGAN_ADMIN_KEY") or None
    return Client(args.url, admin_key=key)


def _registry():
    from app.config import get_settings
    from worker.registry import open_registry

    return open_registry(get_settings())


def _local_versions(reg, name: str, scale: int) -> dict[str, Any]:
    active = reg.active_version(name, scale)
    return {
        "name": name,
        "scale": scale,
        "active": active,
        "history": reg.history(name, scale),
        "versions": [{**r.to_dict(), "active": r.version == active} for r in reg.versions(name, scale)],
    }


def _run(args: argparse.Namespace, remote, local) -> int:
    """Run ``remote(client)`` or ``local(registry)``; service errors become one line and exit status 1."""
    if args.local:
        from model.registry import RegistryError  # imports torch: only here, not for a gateway's answer

        try:
            out = local(_registry())
        except RegistryError as e:
            print(f"error: {e.code}: {e}", file=sys.stderr)
            return 1
    else:
        import httpx

        from app.client import ServiceError

        try:
            with _client(args) as c:
                out = remote(c)
        except ServiceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except httpx.HTTPError as e:
            print(
                f"error: cannot reach the gateway at {args.url}: {e} (--url, or --local to work without it)",
                file=sys.stderr,
            )
            return 1
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        _show(out)
    return 0


def _show(out: Any) -> None:
    if isinstance(out, dict) and "versions" in out and isinstance(out["versions"], list):
        print(f"{out['name']} x{out['scale']}: active version {out['active']} (history {out['history']})")
        for v in out["versions"]:
            gate = (v.get("metrics") or {}).get("gate") or {}
            score = f"{gate['psnr_y']:.3f} dB {'pass' if gate.get('passed') else 'FAIL'}" if gate else "-"
            mark = "*" if v.get("active") else " "
            print(
                f" {mark} v{v['version']:<4} {v['source']:<9} {v['sha256'][:12]}  gate {score:<16} "
                f"created {v.get('created') or '-'}  promoted {v.get('promoted_at') or '-'} "
                f"by {v.get('promoted_by') or '-'}"
            )
    elif isinstance(out, dict) and "models" in out:
        for m in out["models"]:
            if m.get("weightless") or m.get("sha256") == "builtin":
                continue
            print(
                f"{m['name']:<10} x{m['scale']}  active {m['version'] if m['version'] is not None else '-':<4} "
                f"versions {','.join(map(str, m['versions'])) or '-':<12} "
                f"{(m.get('sha256') or '')[:12]}"
            )
    elif isinstance(out, dict) and "active" in out and "previous" in out:
        rollout = out.get("rollout") or {}
        done = (
            ""
            if not rollout
            else (
                " - all workers switched"
                if rollout.get("complete")
                else f" - workers not switched yet: {rollout.get('workers')}"
            )
        )
        change = "" if out.get("changed", True) else " (it was active already)"
        print(f"{out['name']} x{out['scale']}: version {out['active']} active (was {out['previous']}){change}{done}")
    elif isinstance(out, dict) and "version" in out and "sha256" in out:
        gate = (out.get("metrics") or {}).get("gate") or {}
        print(
            f"{out['name']} x{out['scale']}: registered version {out['version']} ({out['sha256'][:12]}), gate "
            f"PSNR-Y {gate.get('psnr_y')} dB vs {gate.get('baseline')} {gate.get('baseline_psnr_y')} dB: "
            f"{'passed' if gate.get('passed') else 'FAILED'}{' - active' if out.get('active') else ''}"
        )
    else:
        print(json.dumps(out, indent=2, default=str))


def cmd_list(args: argparse.Namespace) -> int:
    from app.config import get_settings

    default = get_settings().default_scale
    if args.name:
        name, scale = _series(args.name, args.scale, default)
        assert scale is not None
        return _run(args, lambda c: c.versions(name, scale), lambda reg: _local_versions(reg, name, scale))

    def local(reg) -> dict[str, Any]:
        rows = reg.catalog()
        return {"models": [{**r, "versions": sorted(r["versions"])} for r in rows]}

    return _run(args, lambda c: c.models().raw, local)


def cmd_upload(args: argparse.Namespace) -> int:
    name, scale = _series(args.name, args.scale, None)  # no default: the card says the scale
    who = _who(args)

    def local(reg) -> dict[str, Any]:
        rec = reg.register(
            name, args.weights, args.card, scale=scale, source="uploaded", by=who, force=args.force, notes=args.notes
        )
        if args.promote and rec.gate and rec.gate.get("passed"):
            reg.promote(name, rec.scale, rec.version, by=who)
        return {**rec.to_dict(), "active": reg.active_version(name, rec.scale) == rec.version}

    def remote(c) -> dict[str, Any]:
        return c.upload_version(
            args.name, args.weights, args.card, force=args.force, promote=args.promote, by=who, notes=args.notes
        )

    return _run(args, remote, local)


def _activation(change, name: str, scale: int) -> dict[str, Any]:
    return {
        "name": name,
        "scale": scale,
        "active": change.record.version,
        "previous": change.previous,
        "changed": change.changed,
        "history": change.stack,
    }


def cmd_promote(args: argparse.Namespace) -> int:
    from app.config import get_settings

    name, scale = _series(args.name, args.scale, get_settings().default_scale)
    assert scale is not None  # a default scale was given
    who = _who(args)
    return _run(
        args,
        lambda c: c.promote(name, args.version, by=who, wait=args.wait, scale=scale),
        lambda reg: _activation(reg.promote(name, scale, args.version, by=who), name, scale),
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    from app.config import get_settings

    name, scale = _series(args.name, args.scale, get_settings().default_scale)
    assert scale is not None  # a default scale was given
    who = _who(args)
    return _run(
        args,
        lambda c: c.rollback(name, by=who, wait=args.wait, scale=scale),
        lambda reg: _activation(reg.rollback(name, scale, by=who), name, scale),
    )
