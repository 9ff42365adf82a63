"""The engine's command-line commands: ``srgan upscale``, ``srgan eval``, ``srgan bench engine``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


def add_engine_options(
    p: argparse.ArgumentParser, *, tile_default: int | None = None, precision_default: str = "auto"
) -> None:
    p.add_argument(
        "--model",
        "-m",
        default="srresnet",
        help="model name, or NAME@VERSION for a registered version (default: srresnet, active version)",
    )
    p.add_argument("--scale", "-s", type=int, default=4, help="upscaling factor (default: 4)")
    p.add_argument("--weights", type=Path, help="weights file to use instead of the model's default")
    p.add_argument(
        "--tile",
        type=int,
        default=tile_default,
        help="tile size in input pixels; 0 processes each image whole (default: automatic)",
    )
    p.add_argument("--overlap", type=int, help="tile overlap in input pixels (default: the model's)")
    p.add_argument("--batch-size", type=int, help="tiles per forward pass (default: automatic)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument(
        "--precision",
        default=precision_default,
        choices=["auto", "fp32", "bf16", "fp16"],
        help=f"compute precision (default: {precision_default})",
    )
    p.add_argument("--compile", action="store_true", help="use torch.compile")


def engine_from_args(args: argparse.Namespace):
    from model.engine import EngineConfig, Upscaler
    from model.zoo import load_model

    name, _, version = args.model.partition("@")
    model = load_model(name, args.scale, path=args.weights, version=version or None)
    cfg = EngineConfig(
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        compile=args.compile,
    )
    return Upscaler(model, cfg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale image files", description="Upscale image files with a model.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="input images")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", "-f", default="png", choices=["png", "webp", "jpeg"], help="output format")
    p.add_argument("--quality", "-q", type=int, default=90, help="WebP/JPEG quality 1-100 (default: 90)")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse inputs with more pixels than this")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_engine_options(p)
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser(
        "eval",
        help="PSNR-Y / SSIM-Y on a folder of HR images",
        description="Evaluate a model on HR images: bicubic LR, PSNR/SSIM on Y, border = scale.",
    )
    p.add_argument("--data", type=Path, required=True, nargs="+", help="folder(s) of HR images")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list for several folders)")
    add_engine_options(p, tile_default=0, precision_default="fp32")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="side-by-side picture of models on one crop of an HR image")
    p.add_argument("image", type=Path, help="HR image (it is downscaled with bicubic first)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output PNG")
    p.add_argument("--models", nargs="+", default=["bicubic", "espcn", "srresnet", "srgan"])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--crop", type=int, nargs=3, metavar=("TOP", "LEFT", "SIZE"), help="crop of the HR image")
    p.set_defaults(func=cmd_compare)


def register_bench(bsub: argparse._SubParsersAction) -> None:
    """``srgan bench engine`` (the cli's ``bench`` command gathers its subcommands from each module)."""
    p = bsub.add_parser("engine", help="model-only throughput vs fp32 eager and the roofline")
    p.add_argument("--models", nargs="+", default=["srresnet", "espcn", "srcnn", "bicubic"])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--batch", type=int, help="tiles per forward (default: the engine's)")
    p.add_argument("--tile", type=int, help="tile size in input pixels (default: the engine's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    p.add_argument("--precisions", nargs="*", default=[], help="extra precisions to time (fp32, bf16, fp16)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.set_defaults(func=cmd_bench_engine)


_CHUNK = 8  # images decoded and held at once: bounds memory for long input lists


def _targets(inputs: list[Path], out: Path, ext: str) -> list[Path]:
    """Output paths keeping each input's stem; a repeated stem gets _2, _3, ..."""
    used: set[Path] = set()
    targets = []
    for path in inputs:
        target, n = out / (path.stem + ext), 2
        while target in used:
            target, n = out / f"{path.stem}_{n}{ext}", n + 1
        used.add(target)
        targets.append(target)
    return targets


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.imageio import DEFAULT_MAX_PIXELS, EXTENSIONS, ImageError, decode, encode

    up = engine_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = _targets(args.inputs, args.out, EXTENSIONS[args.format])
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    failures = 0

    def fail(what: object, error: Exception) -> None:
        nonlocal failures
        print(f"error: {what}: {error}", file=sys.stderr)
        failures += 1

    def load(path: Path):
        try:
            return decode(path.read_bytes(), max_pixels)
        except (OSError, ImageError) as e:
            return e

    bar = tqdm(total=0, unit="tile", disable=args.no_progress, desc=f"{up.model.name} x{up.scale}")
    # Decoding and encoding run in threads while tiles compute (Pillow releases the GIL while it works).
    with ThreadPoolExecutor(max_workers=2) as pool:
        writes = []
        chunks = [list(range(i, min(i + _CHUNK, len(args.inputs)))) for i in range(0, len(args.inputs), _CHUNK)]
        pending = [pool.submit(load, args.inputs[i]) for i in chunks[0]] if chunks else []
        for n, chunk in enumerate(chunks):
            loaded = [f.result() for f in pending]
            if n + 1 < len(chunks):
                pending = [pool.submit(load, args.inputs[i]) for i in chunks[n + 1]]
            ok = [(i, d) for i, d in zip(chunk, loaded, strict=True) if not isinstance(d, Exception)]
            for i, d in zip(chunk, loaded, strict=True):
                if isinstance(d, Exception):
                    fail(args.inputs[i], d)
            base_done, base_total = bar.n, bar.total

            def on_progress(p, base_done=base_done, base_total=base_total) -> None:
                bar.total, bar.n = base_total + p.total, base_done + p.done
                bar.refresh()

            for k, result in up.upscale_iter([d.rgb for _, d in ok], on_progress):
                i, src = ok[k]
                if isinstance(result, Exception):
                    fail(args.inputs[i], result)
                    continue
                writes.append(
                    (
                        i,
                        pool.submit(
                            lambda t, s, r: t.write_bytes(encode(s, r, args.format, args.quality)),
                            targets[i],
                            src,
                            result,
                        ),
                    )
                )
        for i, f in writes:
            try:
                f.result()
                log.info("wrote %s", targets[i])
            except (OSError, ValueError) as e:
                fail(targets[i], e)
    bar.close()
    ok_count = len(args.inputs) - failures
    print(f"{ok_count} image(s) written to {args.out}" + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from model.evaluate import evaluate

    up = engine_from_args(args)
    results = []
    for folder in args.data:

        def show(row: dict) -> None:
            if not args.json:
                print(
                    f"  {row['image']:<24} PSNR-Y {row['psnr_y']:7.3f} dB   SSIM-Y {row['ssim_y']:.4f}   "
                    f"HF {row['hf_ratio']:.3f}"
                )

        if not args.json:
            print(f"{folder.name}: {up.model.name} x{up.scale} ({up.precision}, {up.device})")
        r = evaluate(up, folder, on_image=show)
        results.append(r)
        if not args.json:
            print(
                f"  {'mean':<24} PSNR-Y {r['mean']['psnr_y']:7.3f} dB   SSIM-Y {r['mean']['ssim_y']:.4f}   "
                f"HF {r['mean']['hf_ratio']:.3f}"
            )
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from model.compare import comparison

    comparison(args.image, args.models, args.scale, args.crop).save(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_bench_engine(args: argparse.Namespace) -> int:
    from model.bench import run_bench

    rows = run_bench(
        args.models,
        args.scale,
        args.batch,
        args.tile,
        args.device,
        args.seconds,
        args.compile,
        args.precisions,
        log=(lambda line: print(line, file=sys.stderr)) if args.json else print,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0
