"""``srgan compare``: one crop of an HR image as LR (nearest), then each model's output, then HR, side by side."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from model.engine import EngineConfig, Upscaler
from model.evaluate import make_lr
from model.imageio import decode
from model.quality import psnr_y
from model.zoo import load_model

__all__ = ["comparison"]


def comparison(
    hr_path: Path, models: list[str], scale: int = 4, crop: tuple[int, int, int] | None = None, label: bool = True
) -> Image.Image:
    """The picture: LR (nearest) | model outputs ... | HR, for a square crop (top, left, size) of the HR image.

    The whole image is downscaled and upscaled (so borders do not influence the crop); PSNR-Y of the crop is
    written under each model's name.
    """
    hr = decode(hr_path.read_bytes(), max_pixels=None).rgb
    if hr.dtype != torch.uint8:
        hr = (hr * 255).round().to(torch.uint8)
    hr, lr = make_lr(hr, scale)
    h, w = hr.shape[1:]
    top, left, size = crop or ((h - min(h, w) // 2) // 2, (w - min(h, w) // 2) // 2, min(h, w) // 2)
    top, left, size = top // scale * scale, left // scale * scale, size // scale * scale
    window = (slice(None), slice(top, top + size), slice(left, left + size))
    panels = [
        ("LR (nearest)", F.interpolate(lr[None].float(), scale_factor=scale, mode="nearest")[0].to(torch.uint8)[window])
    ]
    for name in models:
        up = Upscaler(load_model(name, scale), EngineConfig(precision="fp32"))
        sr = up.upscale([lr])[0][window]
        panels.append((f"{name}  {psnr_y(sr, hr[window], 0):.2f} dB", sr))
    panels.append(("HR", hr[window]))
    gap, text_h = 4, 18 if label else 0
    canvas = Image.new("RGB", (len(panels) * (size + gap) - gap, size + text_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, img) in enumerate(panels):
        x = i * (size + gap)
        canvas.paste(Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()), (x, 0))
        if label:
            draw.text((x + 4, size + 3), title, fill=(0, 0, 0))
    return canvas
