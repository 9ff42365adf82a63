"""The realism knob's blend (model/blend.py): exact at the ends, a true interpolation between, and served through
the engine as the two models are."""

from __future__ import annotations

import pytest
import torch

from model.blend import blend_models, blend_states, check_realism, realism_key
from model.engine import EngineConfig, Upscaler
from model.weights import WeightsError
from model.zoo import load_model
from tests.conftest import photo_tensor


@pytest.fixture(scope="module")
def pair():
    return load_model("srresnet", 4), load_model("srgan", 4)


def test_realism_values_are_checked_and_rounded():
    assert check_realism(0) == 0.0 and check_realism(1) == 1.0 and check_realism("0.5") == 0.5
    assert check_realism(0.304) == 0.3 and realism_key(0.296) == 0.3
    for bad in (-0.01, 1.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="from 0 to 1"):
            check_realism(bad)


def test_blend_states_interpolates_every_float_tensor_and_keeps_the_ends_exact():
    g = torch.Generator().manual_seed(0)
    p = {"w": torch.randn(5, generator=g), "n": torch.tensor(7)}
    a = {"w": torch.randn(5, generator=g), "n": torch.tensor(9)}
    assert torch.equal(blend_states(p, a, 0.0)["w"], p["w"]) and torch.equal(blend_states(p, a, 1.0)["w"], a["w"])
    half = blend_states(p, a, 0.5)
    assert torch.allclose(half["w"], (p["w"] + a["w"]) / 2) and int(half["n"]) == 7
    assert blend_states(p, a, 0.0)["w"] is not p["w"]  # a copy: serving a blend never aliases a model's weights
    with pytest.raises(WeightsError):
        blend_states(p, {"w": a["w"]}, 0.5)


@pytest.mark.slow  # runs SRResNet on CPU
def test_realism_0_and_1_reproduce_srresnet_and_srgan_bitwise_through_the_engine(pair):
    psnr, adv = pair
    img = photo_tensor("astronaut", (48, 60))  # tiled: several windows per image, a ragged edge
    cfg = EngineConfig(device="cpu", precision="fp32", tile=32, batch_size=3)
    want_psnr = Upscaler(psnr, cfg).upscale([img])[0]
    want_adv = Upscaler(adv, cfg).upscale([img])[0]
    got0 = Upscaler(blend_models(psnr, adv, 0.0), cfg).upscale([img])[0]
    got1 = Upscaler(blend_models(psnr, adv, 1.0), cfg).upscale([img])[0]
    assert torch.equal(got0, want_psnr) and torch.equal(got1, want_adv)
    mid = Upscaler(blend_models(psnr, adv, 0.5), cfg).upscale([img])[0]
    assert not torch.equal(mid, want_psnr) and not torch.equal(mid, want_adv)
    # between the two, pixel for pixel, up to the rounding of a nonlinear network
    lo, hi = torch.minimum(want_psnr, want_adv).int(), torch.maximum(want_psnr, want_adv).int()
    inside = ((mid.int() >= lo - 8) & (mid.int() <= hi + 8)).float().mean()
    assert inside > 0.95


@pytest.mark.slow  # runs SRResNet on CPU
def test_a_blend_has_its_own_identity_and_says_what_it_is(pair):
    psnr, adv = pair
    b = blend_models(psnr, adv, 0.3)
    assert b.name == "srgan" and b.version_number is None and b.card is not None
    assert b.version not in (psnr.version, adv.version) and b.version == blend_models(psnr, adv, 0.3).version
    assert b.version != blend_models(psnr, adv, 0.31).version
    assert b.card.recipe["blend"] == {"realism": 0.3, "adversarial_sha256": adv.version, "psnr_sha256": psnr.version}
    assert adv.card.recipe.get("blend") is None  # the sources are untouched


@pytest.mark.slow  # runs SRResNet on CPU
def test_only_the_same_architecture_blends(pair):
    psnr, _ = pair
    with pytest.raises(WeightsError, match="cannot blend"):
        blend_models(psnr, load_model("espcn", 4), 0.5)


@pytest.mark.slow  # runs SRResNet on CPU
def test_the_worker_pool_builds_a_blend_once_per_value_and_serves_the_ends_as_the_models(tmp_path):
    from model.registry import Registry
    from worker.models import ModelError, ModelPool
    from worker.settings import ServiceSettings

    settings = ServiceSettings(worker_device="cpu", worker_precision="fp32", worker_tile=32, worker_version_cache=2)
    pool = ModelPool(settings, Registry(tmp_path / "models"), None)
    half = pool.engine("srgan", 4, realism=0.5)
    assert pool.engine("srgan", 4, realism=0.5) is half and pool.engine("srgan", 4, realism=0.501) is half
    assert half.model.card.recipe["blend"]["realism"] == 0.5
    img = photo_tensor("chelsea", (40, 44))
    assert torch.equal(
        pool.engine("srgan", 4, realism=0.0).upscale([img])[0], pool.engine("srresnet", 4).upscale([img])[0]
    )
    assert torch.equal(
        pool.engine("srgan", 4, realism=1.0).upscale([img])[0], pool.engine("srgan", 4).upscale([img])[0]
    )
    assert pool.engine("srgan", 4, realism=0.5) is not half  # two more values since: dropped (cache of 2)
    with pytest.raises(ModelError, match="needs model srgan"):
        pool.engine("espcn", 4, realism=0.5)
    with pytest.raises(ModelError) as e:
        pool.engine("srgan", 4, realism=2.0)
    assert e.value.code == "invalid_realism"


@pytest.mark.slow  # runs SRResNet on CPU
def test_srgan_upscale_realism_on_the_command_line(tmp_path, capsys):
    from PIL import Image

    from app.cli import main

    src = tmp_path / "cat.png"
    Image.fromarray(photo_tensor("chelsea", (32, 36)).permute(1, 2, 0).numpy()).save(src)
    common = ["upscale", str(src), "--device", "cpu", "--precision", "fp32", "--no-progress"]
    assert main([*common, "-m", "srresnet", "-o", str(tmp_path / "psnr.png")]) == 0
    assert main([*common, "--realism", "0", "-o", str(tmp_path / "r0.png")]) == 0
    assert main([*common, "--realism", "0.5", "-o", str(tmp_path / "r5.png")]) == 0
    assert (tmp_path / "r0.png").read_bytes() == (tmp_path / "psnr.png").read_bytes()
    assert (tmp_path / "r5.png").read_bytes() != (tmp_path / "psnr.png").read_bytes()
    assert main([*common, "--realism", "1.5", "-o", str(tmp_path / "bad.png")]) != 0
    assert "from 0 to 1" in capsys.readouterr().err
    assert main([*common, "--realism", "0.5", "-m", "espcn", "-o", str(tmp_path / "bad.png")]) != 0
