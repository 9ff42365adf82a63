"""ICNR initialisation (training/init.py): the sub-pixel phases start equal, so an untrained network paints no
dot grid, where the default initialisation paints little else."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from model.archs import ESPCN, SRResNet
from model.quality import lattice_score
from tests.conftest import photo_tensor
from training.config import load_config
from training.init import apply_icnr, icnr_, sub_pixel_convs


def test_icnr_makes_every_shuffled_cell_constant():
    torch.manual_seed(0)
    conv, shuffle = nn.Conv2d(8, 3 * 4 * 4, 3, padding=1), nn.PixelShuffle(4)
    icnr_(conv, 4)
    y = shuffle(conv(torch.randn(1, 8, 6, 7)))
    cells = y.unfold(2, 4, 4).unfold(3, 4, 4)  # (1, 3, 6, 7, 4, 4): every 4x4 cell holds one value
    assert torch.allclose(cells, cells[..., :1, :1].expand_as(cells))
    with pytest.raises(ValueError, match="cannot feed"):
        icnr_(nn.Conv2d(8, 10, 3), 4)


def test_the_sub_pixel_convs_of_each_architecture_are_found():
    assert [s for _, s in sub_pixel_convs(ESPCN(scale=4))] == [4]
    assert [s for _, s in sub_pixel_convs(SRResNet(scale=4, num_blocks=1))] == [2, 2]
    assert apply_icnr(nn.Sequential(nn.Conv2d(3, 3, 3))) == 0


def test_an_untrained_espcn_paints_a_grid_and_an_icnr_one_does_not():
    img = photo_tensor("astronaut", (48, 48)).float()[None] / 255

    def grid(net: nn.Module) -> float:
        with torch.no_grad():
            out = net(img)[0]
        out = (out - out.min()) / (out.max() - out.min()) * 255  # an untrained net's range is arbitrary
        return lattice_score(out, 4, 4)

    torch.manual_seed(0)
    plain = ESPCN(scale=4).eval()
    torch.manual_seed(0)
    icnr = ESPCN(scale=4).eval()
    apply_icnr(icnr)
    # ICNR starts as a nearest-neighbour upscale of one conv: its blocks' edges, not a grid of offsets
    nearest = grid(nn.Upsample(scale_factor=4, mode="nearest"))
    print(f"lattice share: default init {grid(plain):.3f}, ICNR {grid(icnr):.3f}, nearest upscale {nearest:.3f}")
    assert grid(plain) > 0.3 and grid(plain) > 5 * grid(icnr) and grid(icnr) < 2 * nearest


def test_the_icnr_setting_reaches_the_trainer(tmp_path):
    from training.trainer import Trainer

    cfg = load_config("espcn", overrides={"data": ["x"], "out": str(tmp_path), "icnr": "true", "device": "cpu"})
    w = Trainer(cfg).g.conv3.weight
    assert torch.equal(w[0], w[15]) and not torch.equal(w[0], w[16])  # 16 phases of channel 0 share a kernel
