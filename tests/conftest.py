"""Shared fixtures: real photographs (scikit-image's bundled ones, the shared SR benchmarks when present)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The shared data lives beside the checkout on the development machines; SRGAN_DATA_DIR points elsewhere.
DATA_DIR = Path(os.environ.get("SRGAN_DATA_DIR", REPO.parent / "shared" / "data" / "sr"))
BENCHMARKS = DATA_DIR / "benchmarks"

torch.set_num_threads(min(2, torch.get_num_threads()))


def benchmark_dir(name: str) -> Path:
    path = BENCHMARKS / name
    if not path.is_dir():
        pytest.skip(f"benchmark set {name} not found at {path} (set SRGAN_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def set5() -> Path:
    return benchmark_dir("Set5")


@pytest.fixture(scope="session")
def set14() -> Path:
    return benchmark_dir("Set14")


def photo(name: str = "astronaut") -> np.ndarray:
    """A real photograph shipped inside scikit-image's wheel, as HxWx3 uint8."""
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3] if img.ndim == 3 else np.stack([img] * 3, -1))


def photo_tensor(name: str = "astronaut", size: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) uint8 crop of a real photograph (top-left corner of the interesting area)."""
    img = torch.from_numpy(photo(name)).permute(2, 0, 1).contiguous()
    if size:
        h, w = size
        top, left = (img.shape[1] - h) // 3, (img.shape[2] - w) // 3
        img = img[:, top : top + h, left : left + w].contiguous()
    return img


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """A folder of real photographs (scikit-image's) cropped small, for evaluation and training tests."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(photo_tensor(name, (96, 128)).permute(1, 2, 0).numpy()).save(folder / f"{name}.png")
    return folder
