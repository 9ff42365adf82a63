"""``srgan train STAGE --data DIR ...``: run one stage of the recipe."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.config import STAGES, TrainConfig

# Flags with their own names; every other TrainConfig field is reachable as --set FIELD=VALUE.
_FLAGS = {
    "steps": int,
    "batch_size": int,
    "crop": int,
    "lr": float,
    "device": str,
    "out": str,
    "init": str,
    "vgg_weights": str,
    "workers": int,
    "seed": int,
    "amp": str,
    "time_limit": float,
    "name": str,
    "val_every": int,
    "ckpt_every": int,
    "ema": float,
    "pixel_loss": str,
    "lr_schedule": str,
    "scale": int,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (the SRResNet -> SRGAN recipe, ESPCN, SRCNN)",
        description="Train one stage. Defaults are the paper's; a recipe file (TOML) and flags "
        "override them. Run under torchrun for several GPUs.",
    )
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--data", nargs="+", required=True, help="folders of HR training images (recursive)")
    p.add_argument("--val", nargs="*", default=None, help="HR folders evaluated every --val-every steps")
    p.add_argument("--bench", nargs="*", default=None, help="HR folders scored into the exported model card")
    p.add_argument("--config", help="recipe: a TOML file or the name of a shipped recipe")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any config field (repeatable), e.g. --set lr_milestones=100000",
    )
    for name, typ in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "interpolate",
        help="blend an SRGAN generator with its SRResNet (network interpolation)",
        description="Write ALPHA x ADVERSARIAL + (1 - ALPHA) x PSNR as new weights with an amended "
        "card: less of the adversarial run's artefacts, most of its sharpness.",
    )
    p.add_argument("adversarial", help="the SRGAN generator (.safetensors beside its card)")
    p.add_argument("psnr", help="the PSNR-oriented generator it started from (the SRResNet)")
    p.add_argument("--alpha", type=float, required=True, help="weight of the adversarial generator, 0..1")
    p.add_argument("-o", "--out", required=True, help="output .safetensors (the card goes beside it)")
    p.add_argument("--bench", nargs="*", default=[], help="HR folders scored into the new card")
    p.set_defaults(func=cmd_interpolate)


def cmd_interpolate(args: argparse.Namespace) -> int:
    from training.interpolate import interpolate

    card = interpolate(args.adversarial, args.psnr, args.alpha, args.out, args.bench)
    print(
        f"wrote {Path(args.out).with_suffix('.safetensors')} (sha256 {card.sha256[:12]}): "
        + ", ".join(f"{k} {v['psnr_y']:.2f} dB" for k, v in card.metrics.items() if isinstance(v, dict))
    )
    return 0


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from training.config import load_config

    overrides = {name: getattr(args, name) for name in _FLAGS}
    overrides["data"] = args.data
    if args.val is not None:
        overrides["val"] = args.val
    if args.bench is not None:
        overrides["bench"] = args.bench
    if args.no_progress:
        overrides["progress"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set needs FIELD=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = value
    return load_config(args.stage, args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from training.loop import TrainingStopped, train

    cfg = config_from_args(args)
    try:
        path = train(cfg, resume=args.resume)
    except TrainingStopped as e:
        print(f"{e}; continue with the same command and --resume", file=sys.stderr)
        return 130
    if path is not None:
        print(f"exported {path} (card: {Path(path).with_suffix('.json')})")
    return 0
