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
    p.add_argument(
        "--realism",
        type=float,
        help="0..1: blend the active srresnet (0, smooth) and srgan (1, sharpest textures) weights; implies srgan",
    )


def engine_from_args(args: argparse.Namespace):
    from model.engine import EngineConfig, Upscaler
    from model.zoo import load_model

    name, _, version = args.model.partition("@")
    if getattr(args, "realism", None) is not None:
        from model.blend import REALISM_MODELS, blend_models, check_realism

        if args.weights or version or name not in (*REALISM_MODELS, "srresnet"):
            raise ValueError(
                "--realism blends the active srresnet and srgan: leave out --weights, @VERSION and other models"
            )
        psnr, adv = (load_model(n, args.scale) for n in REALISM_MODELS)
        model = blend_models(psnr, adv, check_realism(args.realism))
    else:
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
    p = sub.add_parser(
        "upscale",
        help="upscale image files or folders",
        description="Upscale images with a model. Nothing is ever overwritten without --overwrite.",
    )
    add_target_options(p)
    p.add_argument("--quality", "-q", type=int, default=90, help="WebP/JPEG quality 1-100 (default: 90)")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse inputs with more pixels than this")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_engine_options(p)
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser(
        "eval",
        help="PSNR-Y / SSIM-Y, detail, lattice and colour error on a folder of HR images",
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
    p = bsub.add_parser("peers", help="our ESPCN through the engine vs the same network in OpenCV's dnn (peers extra)")
    p.add_argument("--side", type=int, default=256, help="input side in pixels")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is reported)")
    p.add_argument("--threads", type=int, help="threads for both (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.set_defaults(func=cmd_bench_peers)
    p = bsub.add_parser("gpu", help="engine variants, service at saturation and overhead in one table (make gpu-bench)")
    p.add_argument("--device", default="auto")
    p.add_argument("--models", nargs="+", default=["srresnet", "espcn", "srcnn"])
    p.add_argument("--images", type=int, default=32, help="engine: images per call")
    p.add_argument("--side", type=int, default=256, help="engine: input side in pixels")
    p.add_argument("--seconds", type=float, default=3.0, help="engine: time per variant")
    p.add_argument("--compile", nargs="*", default=["max-autotune"], help="torch.compile modes to time (CUDA)")
    p.add_argument("--compile-models", nargs="*", default=["srresnet"], help="models to time compiled")
    p.add_argument("--no-service", action="store_true", help="engine only")
    p.add_argument("--service-images", type=int, default=96)
    p.add_argument("--service-side", type=int, default=256)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--formats", nargs="+", default=["png", "jpeg"])
    p.add_argument("--overhead-jobs", type=int, default=2000, help="jobs of the overhead proxy")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (compiles stop at half)")
    p.add_argument("--out", type=Path, default=Path("gpu-bench.json"), help="JSON result (default: %(default)s)")
    p.set_defaults(func=cmd_bench_gpu)


def add_target_options(p: argparse.ArgumentParser) -> None:
    """Inputs, -o and the naming options: the same for ``srgan upscale`` and ``srgan client upscale``."""
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="input images, or folders of images")
    p.add_argument(
        "-o",
        "--out",
        metavar="OUT",
        help="the output file for one input image (its extension picks the format), else a folder "
        "(a single input's -o is a folder when it exists as one or ends with /); default: beside each input",
    )
    p.add_argument("--suffix", help="added to each output name, STEM_SUFFIX.EXT (default: x<scale>; '' for none)")
    p.add_argument("--recursive", "-r", action="store_true", help="also the images in subfolders of input folders")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist (never another input)")
    p.add_argument("--format", "-f", choices=["png", "webp", "jpeg"], help="output format (default: png)")


_CHUNK = 8  # images decoded and held at once: bounds memory for long input lists


def tile_count(up, width: int, height: int) -> int:
    """Tiles the engine computes for an image of this size (what its progress counts)."""
    from model.engine import tile_windows

    return len(tile_windows(height, up.tile, up.overlap)) * len(tile_windows(width, up.tile, up.overlap))


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.imageio import DEFAULT_MAX_PIXELS, ImageError, decode, encode, probe
    from model.targets import plan, write_new

    suffix = f"x{args.scale}" if args.suffix is None else args.suffix
    # The whole plan is checked before the model loads: a refused one costs nothing and writes nothing.
    targets, fmt = plan(
        args.inputs, args.out, format=args.format, suffix=suffix, recursive=args.recursive, overwrite=args.overwrite
    )
    up = engine_from_args(args)
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    failures = 0

    def fail(what: object, error: Exception) -> None:
        nonlocal failures
        print(f"error: {what}: {error}", file=sys.stderr)
        failures += 1

    # Headers first (cheap): the progress bar knows every image's tiles before the first one computes.
    jobs = []
    for t in targets:
        try:
            info = probe(t.source, max_pixels)
        except (OSError, ImageError) as e:
            fail(t.source, e)
            continue
        jobs.append((t, tile_count(up, info.width, info.height)))

    def load(path: Path):
        try:
            return decode(path.read_bytes(), max_pixels)
        except (OSError, ImageError) as e:
            return e

    def save(path: Path, src, result) -> None:
        write_new(path, encode(src, result, fmt, args.quality), overwrite=args.overwrite)

    bar = tqdm(
        total=sum(n for _, n in jobs), unit="tile", disable=args.no_progress, desc=f"{up.model.name} x{up.scale}"
    )
    # Decoding and encoding run in threads while tiles compute (Pillow releases the GIL while it works).
    with ThreadPoolExecutor(max_workers=2) as pool:
        writes = []
        chunks = [jobs[i : i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
        pending = [pool.submit(load, t.source) for t, _ in chunks[0]] if chunks else []
        base = 0  # tiles of the chunks before this one (failed images' tiles count as done)
        for n, chunk in enumerate(chunks):
            loaded = [f.result() for f in pending]
            if n + 1 < len(chunks):
                pending = [pool.submit(load, t.source) for t, _ in chunks[n + 1]]
            ok = []
            for (t, _), d in zip(chunk, loaded, strict=True):
                if isinstance(d, Exception):
                    fail(t.source, d)
                else:
                    ok.append((t, d))

            def on_progress(p, base=base) -> None:
                bar.update(max(0, base + p.done - bar.n))

            for k, result in up.upscale_iter([d.rgb for _, d in ok], on_progress):
                t, src = ok[k]
                if isinstance(result, Exception):
                    fail(t.source, result)
                else:
                    writes.append((t, pool.submit(save, t.path, src, result)))
            base += sum(tiles for _, tiles in chunk)
            bar.update(max(0, base - bar.n))
        for t, f in writes:
            try:
                f.result()
                log.info("wrote %s", t.path)
            except (OSError, ValueError) as e:
                fail(t.path, e)
    bar.close()
    written = len(targets) - failures
    where = targets[0].path if len(targets) == 1 else args.out or "beside the inputs"
    print(f"{written} image(s) written to {where}" + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def _scores(row: dict) -> str:
    """One line of ``srgan eval``: PSNR/SSIM, detail, the grid (model / HR) and the mean colour error."""
    rgb = "/".join(f"{c:+.2f}" for c in row["colour_error"])
    return (
        f"PSNR-Y {row['psnr_y']:7.3f} dB   SSIM-Y {row['ssim_y']:.4f}   HF {row['hf_ratio']:.3f}   "
        f"lattice {100 * row['lattice']:.2f}% (HR {100 * row['lattice_hr']:.2f}%)   RGB error {rgb}"
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from model.evaluate import evaluate

    up = engine_from_args(args)
    results = []
    for folder in args.data:

        def show(row: dict) -> None:
            if not args.json:
                print(f"  {row['image']:<24} {_scores(row)}")

        if not args.json:
            print(f"{folder.name}: {up.model.name} x{up.scale} ({up.precision}, {up.device})")
        r = evaluate(up, folder, on_image=show)
        results.append(r)
        if not args.json:
            m = r["mean"]
            print(f"  {'mean':<24} {_scores(m)}")
            print(f"  {'':<24} lattice {m['lattice_ratio']:.2f}x HR's (1.0: no more grid than the ground truth)")
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from model.compare import comparison

    comparison(args.image, args.models, args.scale, args.crop).save(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_bench_peers(args: argparse.Namespace) -> int:
    try:
        import cv2  # noqa: F401

        from model.bench_peers import run_peers
    except ModuleNotFoundError as e:
        if e.name != "cv2":
            raise
        print("error: `srgan bench peers` needs OpenCV: pip install 'srgan-service[peers]'", file=sys.stderr)
        return 2
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    rows = run_peers(args.side, args.images, args.rounds, args.threads, log=log)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    from model.bench_gpu import run_gpu_bench

    result = run_gpu_bench(
        args.device, args.models, args.images, args.side, args.seconds, args.compile, args.compile_models,
        not args.no_service,
        args.service_images, args.service_side, args.clients, args.formats, args.overhead_jobs, args.budget, args.out,
    )  # fmt: skip
    return 1 if any("error" in r for r in result["rows"]) else 0


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
