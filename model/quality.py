"""PSNR and SSIM on the Y channel (BT.601), the measurement convention of the SR literature.

Images are uint8-valued RGB (values 0..255, any numeric dtype). Y = 16 + (65.481 R + 128.553 G + 24.966 B)
with R, G, B in [0, 1], kept in float (not rounded). SSIM uses an 11x11 Gaussian window (sigma 1.5) with
'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255, as Wang et al.'s reference code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "rgb_to_y",
    "psnr_y",
    "ssim_y",
    "shave",
    "hf_energy_ratio",
    "hf_residual_y",
    "lattice_score",
    "colour_error",
    "LATTICE_BLOCK",
]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB with values in 0..255 -> (H, W) float64 Y in 16..235."""
    img = img.to(torch.float64) / 255.0
    r, g, b = img[0], img[1], img[2]
    return 16.0 + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b


def shave(img: torch.Tensor, border: int) -> torch.Tensor:
    return img[..., border : img.shape[-2] - border, border : img.shape[-1] - border] if border else img


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int = 0) -> float:
    """PSNR in dB between two (3, H, W) RGB images valued 0..255, on Y, ignoring ``border`` pixels."""
    a, b = shave(rgb_to_y(sr), border), shave(rgb_to_y(hr), border)
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int = 0) -> float:
    """Mean SSIM between two (3, H, W) RGB images valued 0..255, on Y, ignoring ``border`` pixels."""
    a = shave(rgb_to_y(sr), border)[None, None]
    b = shave(rgb_to_y(hr), border)[None, None]
    win = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, win), F.conv2d(b, win)
    var_a = F.conv2d(a * a, win) - mu_a**2
    var_b = F.conv2d(b * b, win) - mu_b**2
    cov = F.conv2d(a * b, win) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean().item()


def hf_energy_ratio(sr: torch.Tensor, hr: torch.Tensor, border: int = 0, sigma: float = 1.5) -> float:
    """High-frequency energy of SR relative to HR, on Y: ||Y - blur(Y)||^2 of SR over that of HR.

    1.0 means as much fine detail as the ground truth; blurry outputs (bicubic, pixel-loss models) score well
    below 1, perceptual/GAN outputs closer to 1 (or above, with artefacts). ``blur`` is a Gaussian of ``sigma``.
    """
    size = int(2 * round(3 * sigma) + 1)
    win = _gaussian_window(size, sigma)

    def energy(img: torch.Tensor) -> float:
        y = shave(rgb_to_y(img), border)[None, None]
        return float(((y[..., size // 2 : -(size // 2), size // 2 : -(size // 2)] - F.conv2d(y, win)) ** 2).sum())

    return energy(sr) / max(energy(hr), 1e-12)


def hf_residual_y(img: torch.Tensor, border: int = 0, sigma: float = 1.5) -> tuple[torch.Tensor, int]:
    """(Y - blur(Y), offset): the high-frequency residual of a (3, H, W) image on Y (the part of
    :func:`hf_energy_ratio`), and the image coordinate of its first row and column (``border`` plus the blur's
    half width), so that a pixel's position in the original image is known."""
    size = int(2 * round(3 * sigma) + 1)
    half = size // 2
    y = shave(rgb_to_y(img), border)[None, None]
    return (y[..., half:-half, half:-half] - F.conv2d(y, _gaussian_window(size, sigma)))[0, 0], border + half


# Lattice blocks: 64 px holds 256 samples of each of the 16 phases at x4, so a phase's mean is a stable
# estimate; small enough that a lattice whose phase or sign changes across the picture is still caught.
LATTICE_BLOCK = 64


def lattice_score(img: torch.Tensor, scale: int, border: int = 0, block: int = LATTICE_BLOCK) -> float:
    """How much of the image's high-frequency energy a grid of period ``scale`` explains, in 0..1.

    The high-frequency residual (:func:`hf_residual_y`) is cut into ``block`` x ``block`` squares aligned to the
    image; in each, every pixel is replaced by the mean residual of its phase (``y mod scale``, ``x mod scale``).
    The score is the energy of those phase means over the residual's energy. A periodic pattern with the scale's
    period (the dot grid of a sub-pixel upsampler) is explained entirely and scores near 1; natural detail has
    phase means near 0 and scores near the chance level ``scale**2 / block**2`` (0.4 % at x4; an image smaller
    than a block is one block of its size, so chance is higher there, for HR alike). Compare a model
    with the HR image on the same picture: HR carries its own share (JPEG's 8 px blocks are periodic at x2/x4).
    """
    r, offset = hf_residual_y(img, border)
    # Phases in the original image's coordinates: start at the next row/column that is a multiple of the scale.
    skip = (-offset) % scale
    r = r[skip:, skip:]
    block = min(block, *r.shape)  # a small image is one block (a higher chance level, the same for HR)
    block -= block % scale  # whole periods per block (x3: 63)
    if block < 2 * scale:
        raise ValueError(f"image too small for a lattice score: {tuple(img.shape[-2:])} with border {border}")
    h, w = (r.shape[0] // block) * block, (r.shape[1] // block) * block
    r = r[:h, :w]
    bs = block // scale
    # (blocks_y, cells_y, phase_y, blocks_x, cells_x, phase_x): average over the cells of each phase in a block
    cells = r.reshape(h // block, bs, scale, w // block, bs, scale)
    means = cells.mean(dim=(1, 4), keepdim=True)
    total = float((r**2).sum())
    explained = float((means**2).sum()) * bs * bs
    return explained / total if total > 0 else 0.0


def colour_error(sr: torch.Tensor, hr: torch.Tensor, border: int = 0) -> list[float]:
    """Mean SR - HR per channel (R, G, B) in levels 0..255, ignoring ``border`` pixels: a tint or a darkening
    that PSNR-Y hides (a constant +2 on one channel is 2.0 here). Greyscale (1, H, W) gives one value."""
    d = shave(sr.to(torch.float64), border) - shave(hr.to(torch.float64), border)
    return [float(c) for c in d.mean(dim=(-2, -1))]
