"""Training data: random HR crops from folders of images, with the LR made on the device.

Sample ``k`` of a run is a pure function of (seed, k): which image, where to crop, which of the 8 flips and
rotations. The sampler hands out sample numbers by step and rank, so a resumed run or any number of
DataLoader workers or DDP processes sees exactly the batches a straight run would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from model.evaluate import IMAGE_SUFFIXES
from model.imresize import imresize

__all__ = ["scan_images", "portable_folder", "RandomCrops", "StepSampler", "make_loader", "degrade"]

log = logging.getLogger(__name__)


def portable_folder(folder: str | Path) -> str:
    """``folder`` as a model card records it, meaningful on another machine: under the shared data folder
    (``$SRGAN_DATA_DIR``) as ``$SRGAN_DATA_DIR/<rest>``, under the working directory relative to it, else as
    given."""
    path = Path(folder).resolve()
    data_dir = os.environ.get("SRGAN_DATA_DIR")
    for root, prefix in ((data_dir, "$SRGAN_DATA_DIR"), (os.getcwd(), None)):
        if root and path.is_relative_to(Path(root).resolve()):
            rest = path.relative_to(Path(root).resolve()).as_posix()  # "." for the root itself
            if prefix is None:
                return rest
            return prefix if rest == "." else f"{prefix}/{rest}"
    return str(Path(folder))


def scan_images(folders: list[str], min_size: int) -> tuple[list[Path], int]:
    """All images under ``folders`` (recursively) at least ``min_size`` on both sides, and how many were
    skipped for being smaller. Reads headers only."""
    paths, skipped = [], 0
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"training data folder {root} does not exist")
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                continue
            try:
                with Image.open(p) as im:
                    w, h = im.size
            except OSError:
                log.warning("skipping unreadable image %s", p)
                skipped += 1
                continue
            if min(w, h) < min_size:
                skipped += 1
                continue
            paths.append(p)
    if not paths:
        raise FileNotFoundError(f"no training images of at least {min_size}x{min_size} pixels in {', '.join(folders)}")
    return paths, skipped


class RandomCrops(Dataset):
    """Sample ``k`` -> a (3, crop, crop) uint8 HR crop, randomly flipped/rotated, chosen by (seed, k)."""

    def __init__(self, paths: list[Path], crop: int, seed: int = 0, cache: bool = True):
        self.paths, self.crop, self.seed, self.cache = paths, crop, seed, cache
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:  # samples are addressed by number; the sampler decides how many
        return 2**62

    def _image(self, i: int) -> np.ndarray:
        img = self._images.get(i)
        if img is None:
            with Image.open(self.paths[i]) as im:
                img = np.asarray(im.convert("RGB"))
            if self.cache:
                self._images[i] = img
        return img

    def __getitem__(self, k: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, k])
        img = self._image(int(rng.integers(len(self.paths))))
        h, w = img.shape[:2]
        y, x = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        patch = img[y : y + self.crop, x : x + self.crop]
        if rng.integers(2):
            patch = patch[:, ::-1]
        patch = np.rot90(patch, int(rng.integers(4)))
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)


class StepSampler(Sampler[int]):
    """Distributed sampler by step: rank ``r`` of ``world`` takes samples ((step * world + r) * batch + j)."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.total, self.batch, self.rank, self.world = start_step, total_steps, batch_size, rank, world

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.batch

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.total):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)


def make_loader(dataset: RandomCrops, sampler: StepSampler, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=sampler.batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=True,
    )


def degrade(hr_u8: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR in [0, 1], LR in [0, 1]) from a uint8 HR batch: MATLAB bicubic, rounded to 8 bits like saved LR."""
    hr = hr_u8.float().div_(255)
    lr = imresize(hr, 1 / scale).mul_(255).round_().clamp_(0, 255).div_(255)
    return hr, lr
