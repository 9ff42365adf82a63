"""PSNR and SSIM on the Y channel (BT.601), the measurement convention of the SR literature.

Images are uint8-valued RGB (values 0..255, any numeric dtype). Y = 16 + (65.481 R + 128.553 G + 24.966 B)
with R, G, B in [0, 1], kept in float (not rounded). SSIM uses an 11x11 Gaussian window (sigma 1.5) with
'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255, as Wang et al.'s reference code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "shave", "hf_energy_ratio"]

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
