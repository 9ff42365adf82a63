import math

import pytest
import torch

from model.imresize import imresize
from model.quality import colour_error, hf_energy_ratio, lattice_score, psnr_y, rgb_to_y, ssim_y
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


def _grid(shape: tuple[int, ...], scale: int, amplitude: float, phase: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A dot every ``scale`` pixels (rows and columns ``phase`` mod ``scale``), as a sub-pixel upsampler paints."""
    h, w = shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((yy % scale == phase[0]) & (xx % scale == phase[1])).double() * amplitude


def test_a_periodic_pattern_scores_high_and_natural_detail_low():
    hr = photo_tensor("astronaut", (256, 256)).double()
    flat = torch.full((3, 256, 256), 128.0, dtype=torch.float64)
    assert lattice_score(flat + _grid(flat.shape, 4, 8.0), 4, 4) > 0.95  # nothing but the grid
    natural = lattice_score(hr, 4, 4)
    assert natural < 2 * 16 / 64**2  # chance level: 16 phases in a 64-pixel block
    noise = flat + torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    assert lattice_score(noise, 4, 4) < 2 * 16 / 64**2
    dotted = (hr + _grid(hr.shape, 4, 8.0)).clamp(0, 255)
    assert lattice_score(dotted, 4, 4) > 5 * natural
    # Same period, another phase: still a lattice. A period that is not the scale's (5 px at x4) is not one.
    assert lattice_score(flat + _grid(flat.shape, 4, 8.0, (1, 3)), 4, 4) > 0.95
    assert lattice_score(flat + _grid(flat.shape, 5, 8.0), 4, 4) < 0.2


def test_lattice_phase_follows_the_image_grid_not_the_crop():
    # A grid that is periodic in the image is explained whatever the border shaved off (phases are taken
    # in image coordinates), and a x3 grid is caught with a block that is a whole number of periods.
    flat = torch.full((3, 200, 200), 100.0, dtype=torch.float64)
    for border in (0, 3, 4):
        assert lattice_score(flat + _grid(flat.shape, 4, 6.0), 4, border) > 0.95
    assert lattice_score(flat + _grid(flat.shape, 3, 6.0), 3, 3) > 0.95


def test_lattice_score_refuses_an_image_too_small():
    with pytest.raises(ValueError, match="too small"):
        lattice_score(torch.zeros(3, 20, 20), 4, 4)
    small = torch.full((3, 48, 48), 90.0, dtype=torch.float64)  # smaller than a block: one block of its size
    assert lattice_score(small + _grid(small.shape, 4, 6.0), 4, 4) > 0.95


def test_colour_error_is_exact_on_a_constant_offset():
    hr = photo_tensor("chelsea", (64, 64)).double()
    shifted = hr.clone()
    shifted[0] += 2.0
    shifted[2] -= 0.5
    assert colour_error(shifted, hr, 4) == pytest.approx([2.0, 0.0, -0.5], abs=1e-12)
    assert colour_error(hr, hr) == [0.0, 0.0, 0.0]
    # Only the border-shaved pixels count.
    framed = hr.clone()
    framed[:, :4] += 50
    assert colour_error(framed, hr, 4) == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
