import math

import pytest
import torch

from model.imresize import imresize
from model.quality import hf_energy_ratio, psnr_y, rgb_to_y, ssim_y
from tests.conftest import photo_tensor


def test_y_channel_is_bt601():
    white, black = torch.full((3, 1, 1), 255.0), torch.zeros(3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(black).item() == pytest.approx(16.0)


def test_psnr_and_ssim_of_known_cases():
    img = photo_tensor("astronaut", (64, 64)).double()
    assert math.isinf(psnr_y(img, img)) and ssim_y(img, img) == pytest.approx(1.0)
    shifted = (img + 219 / 255 * 0 + 2).clamp(0, 255)  # +2 on every channel: Y moves by 2 * 219/255
    assert psnr_y(shifted, img) == pytest.approx(10 * math.log10(255**2 / (2 * 219 / 255) ** 2), abs=0.05)
    noisy = (img + torch.randn_like(img) * 20).clamp(0, 255)
    assert 0 < ssim_y(noisy, img) < 0.9


def test_hf_energy_ratio_orders_blur_truth_and_noise():
    hr = photo_tensor("astronaut", (128, 128)).double()
    blurry = imresize(imresize(hr, 0.25), 4).clamp(0, 255)
    noisy = (hr + torch.randn_like(hr) * 10).clamp(0, 255)
    assert hf_energy_ratio(hr, hr) == pytest.approx(1.0)
    assert hf_energy_ratio(blurry, hr) < 0.5 < 1.0 < hf_energy_ratio(noisy, hr)
