"""``srgan bench gpu`` (``make gpu-bench``): everything a lent GPU should measure, in one run, in one table.

1. **engine**: for each model, ``Upscaler.upscale`` on ``--images`` photos of ``--side``² (tensors in, uint8
   tensors out, the batch size calibrated at start) in each variant: the automatic settings, fp32, bf16 and
   fp16 (each with its PSNR-Y against the HR photos and its PSNR against the fp32 output, so a faster
   precision that costs quality shows), channels_last off, CUDA graphs, and for SRResNet ``torch.compile`` in
   each ``--compile`` mode (a max-autotune compile of one shape takes minutes: compiles start only within the
   first 40 % of ``--budget``, other variants within 70 %, and the service runs get the rest). SRResNet rows
   also give the fraction of the measured bf16 peak.
2. **service**: ``srgan bench service`` at saturation (``--service-images`` images of ``--service-side``²,
   ``--clients`` clients), PNG and JPEG results; its engine-alone ceiling comes from the same run.
3. **overhead**: ``srgan bench service --mode overhead`` when that mode exists (else the service bench's own
   per-job overhead line).

The service runs go through the command line (a child process each), so this module imports nothing above
``model``. Rows print as one table; ``--out`` gets the whole result as JSON. On CPU the same code runs with tiny
sizes (the test does that); the defaults are sized to finish within 10 minutes on an H200.
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from model.bench import compute_peak, flops_per_output_pixel
from model.bench_peers import sample_images
from model.engine import EngineConfig, Upscaler, resolve_device
from model.evaluate import make_lr
from model.quality import psnr_y
from model.zoo import NoWeightsError, load_model, random_model

__all__ = ["run_gpu_bench", "engine_rows", "service_rows", "format_table"]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _mean_psnr_y(sr: list[torch.Tensor], hr: list[torch.Tensor]) -> float:
    return round(sum(psnr_y(o, h, 4) for o, h in zip(sr, hr, strict=True)) / len(hr), 3)


def _median_seconds(fn: Callable[[], object], seconds: float, min_calls: int = 3) -> float:
    fn()  # warm-up: graphs recorded, compiles done
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def engine_rows(
    models: Sequence[str],
    device: str,
    images: int,
    side: int,
    seconds: float,
    compile_modes: Sequence[str],
    deadline: float,
    log: Callable[[str], None],
    compile_models: Sequence[str] = ("srresnet",),
    start: float | None = None,
) -> list[dict]:
    dev = resolve_device(device)
    t0 = time.monotonic() if start is None else start
    photos = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in sample_images(side, images)]
    pairs = [make_lr(torch.from_numpy(a).permute(2, 0, 1).contiguous(), 4) for a in sample_images(128, 5)]
    hr, lrs = [p[0] for p in pairs], [p[1] for p in pairs]
    rows: list[dict] = []
    peak = None
    for name in models:
        try:
            model = load_model(name, 4)
        except NoWeightsError:
            model = random_model(name, 4)
        auto = Upscaler(model, EngineConfig(device=str(dev)))
        fpp = flops_per_output_pixel(auto.net, photos[0][None].to(dev).float() / 255, 4) if name == "srresnet" else 0
        variants: list[tuple[str, dict]] = [(f"auto ({auto.precision})", {})]
        if not model.spec.weightless:
            variants += [(p, {"precision": p}) for p in ("fp32", "bf16", "fp16") if p != auto.precision]
            variants.append(("channels_last off", {"channels_last": False}))
        if dev.type == "cuda":
            variants.append(("CUDA graphs", {"cuda_graphs": True}))
            if name in compile_models:
                variants += [(f"compile {m}", {"compile": True, "compile_mode": m}) for m in compile_modes]
        fp32_out = None
        outputs: dict[int, list[torch.Tensor]] = {}
        for label, cfg in variants:
            # Compiles start only in the first 40 % of the budget; nothing starts after 70 %: the service runs
            # need the rest. ``deadline`` is the end of the engine's half.
            now, budget = time.monotonic(), 2 * (deadline - t0)
            if now > t0 + (0.4 if cfg.get("compile") else 0.7) * budget:
                log(f"{name}: {label} skipped (out of the time budget)")
                rows.append({"section": "engine", "model": name, "variant": label, "skipped": "time budget"})
                continue
            if dev.type == "cpu" and cfg.get("precision") == "fp16":
                continue  # no fp16 convolutions worth timing on CPU
            start = time.perf_counter()
            try:
                up = Upscaler(model, EngineConfig(device=str(dev), **cfg))
                dt = _median_seconds(functools.partial(up.upscale, photos), seconds)
                out = up.upscale(photos)
                # Quality on real HR photos; not for compiled variants: another shape is another compile.
                sr = None if cfg.get("compile") else up.upscale(lrs)
            except Exception as e:  # one variant failing (a compile error) must not lose the others
                log(f"{name}: {label} failed: {type(e).__name__}: {e}")
                rows.append({"section": "engine", "model": name, "variant": label, "error": str(e)[:300]})
                continue
            if label == "fp32" or (fp32_out is None and up.precision == "fp32"):
                fp32_out = out
            mp = images * side * side * 16 / dt / 1e6
            row = {
                "section": "engine",
                "model": name,
                "variant": label,
                "device": str(dev),
                "precision": up.precision,
                "tile": up.tile,
                "batch_size": up.batch_size,
                "images_per_s": round(images / dt, 2),
                "out_mp_per_s": round(mp, 2),
                "psnr_y_vs_hr": None if sr is None else _mean_psnr_y(sr, hr),
                "seconds": round(time.perf_counter() - start, 1),
            }
            outputs[id(row)] = out
            if name == "srresnet" and up.precision in ("bf16", "fp16"):
                peak = peak or compute_peak(dev, "bf16")
                row["peak_fraction"] = round(mp * 1e6 * fpp / 1e9 / peak, 4)
            rows.append(row)
            log(f"{name:<9} {label:<30} {mp:9.2f} output MP/s  {images / dt:8.2f} images/s  batch {up.batch_size}")
        for row in rows:
            mine = outputs.pop(id(row), None)
            if mine is not None and fp32_out is not None:
                row["psnr_vs_fp32"] = round(
                    sum(_psnr(a, b) for a, b in zip(mine, fp32_out, strict=True)) / len(mine), 2
                )
    return rows


def _srgan(*args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "app.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, timeout))


def service_rows(
    images: int,
    clients: int,
    side: int,
    model: str,
    formats: Sequence[str],
    overhead_jobs: int,
    deadline: float,
    log: Callable[[str], None],
) -> list[dict]:
    rows: list[dict] = []
    saturate = ["--images", str(images), "--concurrency", str(clients), "--size", str(side), "--overhead-jobs", "20"]
    runs: list[tuple[str, list[str]]] = [
        (f"service {fmt}", ["--model", model, "--format", fmt, *saturate]) for fmt in formats
    ]
    helptext = _srgan("bench", "service", "--help", timeout=60).stdout
    if re.search(r"--mode(?![\w-])", helptext):  # helper "speed"'s overhead mode, where it has landed
        runs.append(("overhead proxy", ["--mode", "overhead", "--jobs", str(overhead_jobs)]))
    else:
        log("overhead proxy: `srgan bench service --mode overhead` is not in this checkout; skipped")
    for label, extra in runs:
        left = deadline - time.monotonic()
        if left < 20:
            log(f"{label}: skipped (out of time)")
            rows.append({"section": "service", "variant": label, "skipped": "time budget"})
            continue
        log(f"{label}: srgan bench service {' '.join(extra)} ...")
        try:
            res = _srgan("bench", "service", *extra, "--json", timeout=left)
        except subprocess.TimeoutExpired:
            rows.append({"section": "service", "variant": label, "error": "timed out"})
            continue
        if res.returncode != 0:
            rows.append({"section": "service", "variant": label, "error": res.stderr.strip()[-500:]})
            log(f"{label}: failed (exit {res.returncode}): {res.stderr.strip()[-300:]}")
            continue
        try:
            data = json.loads(res.stdout[res.stdout.index("{") :])
        except ValueError:
            rows.append({"section": "service", "variant": label, "error": "no JSON: " + res.stdout[-300:]})
            continue
        rows.append({"section": "service", "variant": label, "result": data})
        log(f"{label}: {json.dumps(_headline(data))}")
    return rows


def _headline(
    data: dict, keys: tuple[str, ...] = ("images_per_s", "jobs_per_s", "ratio", "p50", "p99", "cpu_ms", "failures")
) -> dict:
    """The flat numbers of a service bench result whose names contain any of ``keys``."""
    out: dict = {}

    def walk(prefix: str, v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, int | float) and any(k in prefix for k in keys):
            out[prefix] = v

    walk("", data)
    return out


def format_table(rows: list[dict]) -> str:
    lines = [f"{'section':<8} {'model':<9} {'variant':<30} {'out MP/s':>9} {'img/s':>8} {'PSNR-Y':>7} {'vs fp32':>8}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['section']:<8} {r.get('model', ''):<9} {r['variant']:<30} skipped: {r['skipped']}")
        elif r["section"] == "engine" and "error" not in r:
            lines.append(
                f"{'engine':<8} {r['model']:<9} {r['variant']:<30} {r['out_mp_per_s']:>9.2f} {r['images_per_s']:>8.2f}"
                f" {r['psnr_y_vs_hr'] or float('nan'):>7.2f} {r.get('psnr_vs_fp32', float('nan')):>8.2f}"
                + (f"  {100 * r['peak_fraction']:.1f}% of bf16 peak" if "peak_fraction" in r else "")
            )
        elif "error" in r:
            lines.append(f"{r['section']:<8} {r.get('model', ''):<9} {r['variant']:<30} error: {r['error'][:60]}")
        else:
            for k, v in _headline(r["result"]).items():
                lines.append(f"{'service':<8} {'':<9} {r['variant'] + ' ' + k:<50} {v:.4g}")
    return "\n".join(lines)


def run_gpu_bench(
    device: str = "auto",
    models: Sequence[str] = ("srresnet", "espcn", "srcnn"),
    images: int = 32,
    side: int = 256,
    seconds: float = 3.0,
    compile_modes: Sequence[str] = ("max-autotune",),
    compile_models: Sequence[str] = ("srresnet",),
    service: bool = True,
    service_images: int = 96,
    service_side: int = 256,
    clients: int = 16,
    formats: Sequence[str] = ("png", "jpeg"),
    overhead_jobs: int = 2000,
    budget_s: float = 540.0,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    start = time.monotonic()
    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    log(f"device: {name}; torch {torch.__version__}; budget {budget_s:.0f} s")
    # The engine gets at most half the budget before compiles are skipped; the service runs get the rest.
    rows = engine_rows(
        models, device, images, side, seconds, compile_modes, start + budget_s / 2, log, compile_models, start
    )
    if service:
        deadline = start + budget_s
        rows += service_rows(service_images, clients, service_side, "srresnet", formats, overhead_jobs, deadline, log)
    result = {"device": name, "torch": torch.__version__, "seconds": round(time.monotonic() - start, 1), "rows": rows}
    log(format_table(rows))
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
        log(f"wrote {out}")
    return result
