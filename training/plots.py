"""Pictures of a run: the LR / SR / HR sample grid at each validation and the loss and PSNR curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.engine import EngineConfig, Upscaler
from model.evaluate import list_images, make_lr
from model.imageio import decode
from model.zoo import LoadedModel

__all__ = ["sample_grid", "plot_curves"]


def sample_grid(
    model: LoadedModel,
    folder: str | Path,
    path: Path,
    device: torch.device | str = "cpu",
    images: int = 3,
    crop: int = 128,
) -> Path:
    """A PNG with one column per image and rows LR (nearest) / SR / HR, like the paper's figures."""
    up = Upscaler(model, EngineConfig(device=str(device), precision="fp32", tile=0, channels_last=False))
    s = model.scale
    columns = []
    for p in list_images(folder)[:images]:
        hr, _ = make_lr(decode(p.read_bytes(), max_pixels=None).rgb, s)
        if hr.dtype != torch.uint8:
            hr = (hr * 255).round().to(torch.uint8)
        h, w = hr.shape[1:]
        c = min(crop, h, w) // s * s
        top, left = (h - c) // 2 // s * s, (w - c) // 2 // s * s
        hr = hr[:, top : top + c, left : left + c]
        _, lr = make_lr(hr, s)
        sr = up.upscale([lr])[0]
        nearest = F.interpolate(lr[None].float(), scale_factor=s, mode="nearest")[0].to(torch.uint8)
        columns.append(torch.cat([nearest, sr, hr], dim=1))
    if not columns:
        raise FileNotFoundError(f"no images in {folder}")
    height = max(col.shape[1] for col in columns)
    columns = [F.pad(col, (0, 4, 0, height - col.shape[1]), value=255) for col in columns]
    grid = torch.cat(columns, dim=2).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(grid)).save(path)
    return path


def plot_curves(metrics: Path, path: Path) -> Path:
    """Loss curves and validation PSNR-Y from a run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "val" not in r]
    val = [r for r in rows if "val" in r]
    loss_keys = [
        k for k in (train[0] if train else {}) if k not in ("step", "lr", "it_s", "seconds", "d_real", "d_fake")
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in loss_keys:
        axes[0].plot([r["step"] for r in train], [r.get(k, np.nan) for r in train], label=k)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses")
    axes[0].legend()
    for name in val[0]["val"] if val else {}:
        axes[1].plot([r["step"] for r in val], [r["val"][name]["psnr_y"] for r in val], marker="o", label=name)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("PSNR-Y (dB)")
    axes[1].set_title("validation")
    if val:
        axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
