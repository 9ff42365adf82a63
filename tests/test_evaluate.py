import json

import pytest

from model.evaluate import evaluate
from model.zoo import list_models, load_model

SHIPPED = sorted({r["name"] for r in list_models() if r["scale"] == 4 and r["has_weights"] and not r["weightless"]})


def test_bicubic_reproduces_the_published_set5_numbers(set5):
    r = evaluate(load_model("bicubic", 4), set5)
    assert len(r["images"]) == 5
    assert r["mean"]["psnr_y"] == pytest.approx(28.42, abs=0.03)
    assert r["mean"]["ssim_y"] == pytest.approx(0.810, abs=0.003)


@pytest.mark.slow
def test_bicubic_reproduces_set14_on_these_files(set14):
    r = evaluate(load_model("bicubic", 4), set14)
    assert len(r["images"]) == 14  # bridge.png is greyscale and must be measured too
    assert r["mean"]["psnr_y"] == pytest.approx(26.09, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_are_reproduced_by_eval(name, set5, set14):
    model = load_model(name, 4)
    for folder in (set5, set14):
        card = model.card.metrics[folder.name]
        r = evaluate(model, folder)
        assert r["mean"]["psnr_y"] == pytest.approx(card["psnr_y"], abs=0.01)
        assert r["mean"]["ssim_y"] == pytest.approx(card["ssim_y"], abs=0.001)


@pytest.mark.slow
def test_learned_models_beat_bicubic_on_real_photos(photo_folder):
    bicubic = evaluate(load_model("bicubic", 4), photo_folder)["mean"]["psnr_y"]
    for name in ("srresnet", "espcn", "srcnn"):
        assert evaluate(load_model(name, 4), photo_folder)["mean"]["psnr_y"] > bicubic + 0.3, name


@pytest.mark.slow
def test_srgan_is_sharper_than_srresnet_and_still_faithful(photo_folder):
    # The point of the adversarial stage: more high-frequency energy than the MSE/L1-trained SRResNet
    # (which smooths), without giving up fidelity to the point of losing to bicubic.
    rows = {name: evaluate(load_model(name, 4), photo_folder)["mean"] for name in ("srgan", "srresnet", "bicubic")}
    assert rows["srgan"]["hf_ratio"] > 1.3 * rows["srresnet"]["hf_ratio"]
    assert rows["srgan"]["psnr_y"] > rows["bicubic"]["psnr_y"]


def test_eval_command_json(photo_folder, capsys):
    from app.cli import main

    assert main(["eval", "--model", "bicubic", "--data", str(photo_folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = {"psnr_y", "ssim_y", "hf_ratio", "lattice", "lattice_hr", "lattice_ratio", "colour_error"}
    assert want == set(out["mean"]) and len(out["images"]) == 3
    assert 15 < out["mean"]["psnr_y"] < 40
    # Bicubic paints no grid (less high-frequency structure than HR at every phase) and keeps colours.
    assert out["mean"]["lattice_ratio"] < 1.0 and max(abs(c) for c in out["mean"]["colour_error"]) < 0.1


def test_eval_command_prints_lattice_and_colour(photo_folder, capsys):
    from app.cli import main

    assert main(["eval", "--model", "bicubic", "--data", str(photo_folder)]) == 0
    text = capsys.readouterr().out
    assert "lattice" in text and "x HR's" in text and "RGB error" in text
