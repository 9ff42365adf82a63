"""What a person running ``srgan train`` sees: validation PSNR on the terminal, loss curves with points however
short the run, and a warning for every interval that does not fit the run."""

from __future__ import annotations

import json

import pytest

from training.config import load_config
from training.loop import LOG_POINTS, run_plan, val_line


def cfg(**kw):
    return load_config("espcn", "espcn_cpu", {"data": ["x"], **kw})


def test_a_short_run_logs_often_enough_and_says_what_does_not_fit():
    every, notes = run_plan(cfg(steps=50))  # the recipe: log every 200, warm-up 200, no --val
    assert every == 5 and 50 // every >= LOG_POINTS
    text = "\n".join(notes)
    assert "logging every 200 steps would give 0 point(s) in this 50-step run: logging every 5" in text
    assert "warm-up (200 steps) is as long as the run (50)" in text and "no --val" in text
    _, notes = run_plan(cfg(steps=50, val=["v"], val_every=5000))
    assert any("validation every 5000 steps exceeds the run: it runs once, at step 50" in n for n in notes)


def test_a_long_run_keeps_its_settings_and_warns_of_nothing():
    assert run_plan(cfg(steps=100_000, val=["v"])) == (200, [])
    assert run_plan(cfg(steps=3, warmup_steps=0, val=["v"], val_every=1))[0] == 1  # never below one step
    # on resume, the steps left count: 40 of 50 left -> every 4
    assert run_plan(cfg(steps=50, warmup_steps=0, val=["v"], val_every=10), start_step=10)[0] == 4


def test_val_line_reads_like_a_sentence():
    line = val_line(50, 50, {"Set5": {"psnr_y": 28.123, "ssim_y": 0.81234}})
    assert line == "step 50/50 validation: Set5 PSNR-Y 28.12 dB SSIM-Y 0.8123"
    full = {"psnr_y": 30.0, "ssim_y": 0.9, "hf_ratio": 0.35, "lattice_ratio": 0.6, "colour_error": [0.1, -0.2, 0.0]}
    assert "HF 0.35 lattice 0.60x HR colour +0.1/-0.2/+0.0" in val_line(1, 2, {"a": full})


@pytest.mark.slow  # a real 50-step run
def test_srgan_train_espcn_50_steps_shows_validation_and_plots_points(photo_folder, tmp_path, capsys, caplog):
    from app.cli import main

    out = tmp_path / "run"
    argv = ["train", "espcn", "--data", str(photo_folder), "--val", str(photo_folder), "--config", "espcn_cpu",
            "--steps", "50", "--batch-size", "2", "--crop", "48", "--workers", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"step 50/50 validation: {photo_folder.name} PSNR-Y" in err  # on the terminal, not only in the log
    # warnings go through logging (stderr at the default level; pytest captures them here)
    assert "logging every 5 instead" in caplog.text and "warm-up (200 steps)" in caplog.text
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == list(range(5, 51, 5))  # ten points on the curve
    assert [r["step"] for r in rows if "val" in r] == [50]
    assert (out / "curves.png").stat().st_size > 0


def test_cards_record_data_folders_without_this_machines_paths(tmp_path, monkeypatch):
    from training.data import portable_folder

    data = tmp_path / "shared" / "sr"
    (data / "train" / "T91").mkdir(parents=True)
    monkeypatch.setenv("SRGAN_DATA_DIR", str(data))
    assert portable_folder(data / "train" / "T91") == "$SRGAN_DATA_DIR/train/T91"
    assert portable_folder(data) == "$SRGAN_DATA_DIR"
    monkeypatch.delenv("SRGAN_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert portable_folder(data / "train") == "shared/sr/train"
    assert portable_folder("/elsewhere/photos") == "/elsewhere/photos"


def test_no_shipped_card_names_an_absolute_data_folder():
    import json

    from model.zoo import SHIPPED_WEIGHTS_DIR

    for card in SHIPPED_WEIGHTS_DIR.glob("*.json"):
        folders = json.loads(card.read_text()).get("data", {}).get("folders", [])
        assert not any(f.startswith("/") for f in folders), (card.name, folders)
