"""Helpers for the registry tests: weights files that should be accepted or refused, and a small gate set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.weights import load_weights, save_weights
from model.zoo import SHIPPED_WEIGHTS_DIR


def gate_folder(folder: Path, n: int = 2, side: int = 64) -> Path:
    """A quick gate set: ``n`` crops of scikit-image's photographs (the shipped gate set has 5 of 128 px)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name, (top, left) in list({"astronaut": (80, 180), "chelsea": (60, 130), "coffee": (120, 230)}.items())[:n]:
        a = getattr(skimage.data, name)()[top : top + side, left : left + side, :3]
        Image.fromarray(np.ascontiguousarray(a)).save(folder / f"{name}.png")
    return folder


def variant(out: Path, name: str = "espcn", noise: float = 1e-4, seed: int = 0, random: bool = False) -> Path:
    """A new version of the shipped ``name`` x4: its weights plus a little noise (passes the gate), or freshly
    initialised ones (``random``: fails it). Returns the .safetensors path (its card beside it)."""
    module, card = load_weights(SHIPPED_WEIGHTS_DIR / f"{name}_x4.safetensors")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if random:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.add_(torch.randn(p.shape, generator=g) * noise)
    card.sha256, card.created = "", ""
    card.notes = f"test variant (noise {noise}, seed {seed}, random {random})"
    path = out / f"{name}_x4.safetensors"
    save_weights(module, path, card)
    return path


def lying_card(out: Path) -> Path:
    """Valid espcn weights whose card claims another sha256."""
    path = variant(out, seed=7)
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def srcnn_tensors_espcn_card(out: Path) -> Path:
    """SRCNN tensors under a card that says ESPCN (the safetensors header says srcnn)."""
    src = variant(out / "srcnn", name="srcnn")
    card = json.loads((SHIPPED_WEIGHTS_DIR / "espcn_x4.json").read_text())
    card["sha256"] = ""
    path = out / "espcn_x4.safetensors"
    path.write_bytes(src.read_bytes())
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def garbage(out: Path) -> Path:
    """Random bytes named .safetensors, with the shipped espcn card minus its sha256."""
    path = out / "espcn_x4.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    card = json.loads((SHIPPED_WEIGHTS_DIR / "espcn_x4.json").read_text())
    card["sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(card))
    return path
