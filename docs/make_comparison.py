"""Make ``docs/comparison.png``: the README's picture of what each model does.

Row 1: Set14 ``zebra.png`` (``srgan compare``). Row 2: a flat sky (a Sun-Hays photograph of the training set),
where a dot grid shows first. Row 3: the same sky's high-frequency residual (Y minus its blur, x12 around mid
grey, the signal of ``model.quality.lattice_score``): the shipped SRGAN's 4-pixel lattice is plain there, the
other models' residuals are as featureless as HR's. Run from the repository root::

    SRGAN_DATA_DIR=../shared/data/sr python docs/make_comparison.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from model.compare import comparison
from model.engine import EngineConfig, Upscaler
from model.evaluate import make_lr
from model.imageio import decode
from model.quality import rgb_to_y
from model.zoo import load_model

MODELS = ["bicubic", "espcn", "srresnet", "srgan"]
DATA = Path(os.environ.get("SRGAN_DATA_DIR", "../shared/data/sr"))
SKY = DATA / "train/Sun_Hays80/mosque_outdoor_sun_ajpzxaexxhxeujve.jpg"
SKY_CROP = (128, 416, 192)  # top, left, size in HR pixels: sky only
GAIN = 12.0


def residual_row(hr_path: Path, crop: tuple[int, int, int], scale: int = 4) -> Image.Image:
    """LR (nearest) | each model | HR, as their high-frequency residual on Y, amplified."""
    hr, lr = make_lr(decode(hr_path.read_bytes(), max_pixels=None).rgb, scale)
    top, left, size = crop
    panels = [("LR (nearest) detail", F.interpolate(lr[None].float(), scale_factor=scale, mode="nearest")[0])]
    for name in MODELS:
        sr = Upscaler(load_model(name, scale), EngineConfig(precision="fp32")).upscale([lr])[0]
        panels.append((f"{name} detail x{GAIN:g}", sr))
    panels.append(("HR detail", hr))
    win = torch.ones(1, 1, 3, 3, dtype=torch.float64) / 9
    gap, text_h = 4, 18
    canvas = Image.new("RGB", (len(panels) * (size + gap) - gap, size + text_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, img) in enumerate(panels):
        y = rgb_to_y(img)[None, None]
        hf = (y - F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), win))[0, 0]
        hf = hf[top : top + size, left : left + size]
        grey = (128 + GAIN * hf).clamp(0, 255).round().to(torch.uint8).numpy()
        x = i * (size + gap)
        canvas.paste(Image.fromarray(np.ascontiguousarray(grey)).convert("RGB"), (x, 0))
        draw.text((x + 4, size + 3), title, fill=(0, 0, 0))
    return canvas


def main() -> None:
    zebra = comparison(DATA / "benchmarks/Set14/zebra.png", MODELS, 4, (96, 192, 192))
    rows = [zebra, comparison(SKY, MODELS, 4, SKY_CROP), residual_row(SKY, SKY_CROP)]
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height + 6 for r in rows) - 6), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + 6
    out.save(Path(__file__).resolve().parent / "comparison.png", optimize=True)


if __name__ == "__main__":
    main()
