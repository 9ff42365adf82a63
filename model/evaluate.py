"""Benchmark evaluation: PSNR-Y / SSIM-Y of a model on folders of HR images, the SR literature's way.

HR is cropped to a multiple of the scale, LR made with the MATLAB-compatible bicubic and rounded to 8 bits,
the model's 8-bit output compared with HR on Y with ``scale`` pixels shaved at the border.

Besides PSNR/SSIM, what a photographer sees and PSNR-Y hides: ``hf_ratio`` (fine detail relative to HR),
``lattice`` (the share of the high-frequency energy a grid of the scale's period explains, a dot pattern;
``lattice_hr`` is HR's own on the same pixels, ``lattice_ratio`` the set's model/HR), and ``colour_error``
(mean SR - HR per channel R, G, B in levels: a tint or darkening).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.engine import EngineConfig, Upscaler
from model.imageio import decode
from model.imresize import imresize
from model.quality import colour_error, hf_energy_ratio, lattice_score, psnr_y, ssim_y
from model.zoo import LoadedModel

__all__ = ["list_images", "make_lr", "evaluate", "summarize", "card_metrics", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def make_lr(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR cropped to a multiple of ``scale``, its bicubic LR), both uint8 (3, H, W)."""
    h, w = hr.shape[-2:]
    hr = hr[..., : h - h % scale, : w - w % scale]
    lr = imresize(hr.to(torch.float64), 1 / scale).round_().clamp_(0, 255).to(torch.uint8)
    return hr, lr


def evaluate(
    model: LoadedModel | Upscaler,
    folder: str | Path,
    *,
    config: EngineConfig | None = None,
    on_image: Callable[[dict], None] | None = None,
    max_images: int = 0,
) -> dict:
    """Evaluate on the images of ``folder`` (the first ``max_images`` when > 0).
    Returns {"set", "model", "scale", "images": [...], "mean": {...}}.

    Measurement defaults to fp32 whole-image inference so numbers do not depend on the machine.
    """
    up = model if isinstance(model, Upscaler) else Upscaler(model, config or EngineConfig(precision="fp32", tile=0))
    scale = up.scale
    rows: list[dict[str, Any]] = []
    paths = list_images(folder)
    for path in paths[:max_images] if max_images > 0 else paths:
        hr, lr = make_lr(decode(path.read_bytes(), max_pixels=None).rgb, scale)
        if hr.dtype != torch.uint8:  # 16-bit ground truth: measure on its 8-bit rounding
            hr = (hr * 255).round_().to(torch.uint8)
            hr, lr = make_lr(hr, scale)
        sr = up.upscale([lr])[0]
        row = {
            "image": path.name,
            "psnr_y": psnr_y(sr, hr, scale),
            "ssim_y": ssim_y(sr, hr, scale),
            "hf_ratio": hf_energy_ratio(sr, hr, scale),
            "lattice": lattice_score(sr, scale, scale),
            "lattice_hr": lattice_score(hr, scale, scale),
            "colour_error": colour_error(sr, hr, scale),
        }
        rows.append(row)
        if on_image:
            on_image(row)
    if not rows:
        raise FileNotFoundError(f"no images in {folder}")
    return summarize(rows, Path(folder).name, up.model.name, up.model.version, scale)


def summarize(rows: list[dict[str, Any]], name: str, model: str, version: str, scale: int) -> dict[str, Any]:
    """The set's result from its per-image rows: means of every score, the lattice ratio and the colour error."""
    mean: dict[str, Any] = {
        k: sum(r[k] for r in rows) / len(rows) for k in ("psnr_y", "ssim_y", "hf_ratio", "lattice", "lattice_hr")
    }
    mean["lattice_ratio"] = mean["lattice"] / mean["lattice_hr"] if mean["lattice_hr"] > 0 else 0.0
    mean["colour_error"] = [sum(r["colour_error"][c] for r in rows) / len(rows) for c in range(3)]
    return {
        "set": name,
        "model": model,
        "version": version,
        "scale": scale,
        "border": scale,
        "images": rows,
        "mean": mean,
    }


def card_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """One set's entry in a model card's ``metrics``, rounded: what ``srgan eval`` reproduces."""
    m = result["mean"]
    out: dict[str, Any] = {k: round(m[k], 4) for k in ("psnr_y", "ssim_y", "hf_ratio")}
    out.update(
        lattice=round(m["lattice"], 5),
        lattice_hr=round(m["lattice_hr"], 5),
        lattice_ratio=round(m["lattice_ratio"], 3),
        colour_error=[round(c, 3) for c in m["colour_error"]],
        images=len(result["images"]),
    )
    return out
