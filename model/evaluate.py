"""Benchmark evaluation: PSNR-Y / SSIM-Y of a model on folders of HR images, the SR literature's way.

HR is cropped to a multiple of the scale, LR made with the MATLAB-compatible bicubic and rounded to 8 bits,
the model's 8-bit output compared with HR on Y with ``scale`` pixels shaved at the border.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from model.engine import EngineConfig, Upscaler
from model.imageio import decode
from model.imresize import imresize
from model.quality import hf_energy_ratio, psnr_y, ssim_y
from model.zoo import LoadedModel

__all__ = ["list_images", "make_lr", "evaluate", "IMAGE_SUFFIXES"]

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
    rows = []
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
        }
        rows.append(row)
        if on_image:
            on_image(row)
    if not rows:
        raise FileNotFoundError(f"no images in {folder}")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("psnr_y", "ssim_y", "hf_ratio")}
    return {
        "set": Path(folder).name,
        "model": up.model.name,
        "version": up.model.version,
        "scale": scale,
        "border": scale,
        "images": rows,
        "mean": mean,
    }
