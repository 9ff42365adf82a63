"""The engine's hardware paths: what runs on CPU is tested here; CUDA-only checks skip without a GPU."""

import pytest
import torch

from model.accel import COMPILE_MODES, CudaGraphed, cache_path, calibrate_batch, choose_batch, compiled
from model.engine import Upscaler
from model.zoo import load_model
from tests.conftest import photo_tensor

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


def test_choose_batch_takes_the_smallest_within_tolerance_of_the_best():
    assert choose_batch({1: 1.0, 2: 0.6, 4: 0.41, 8: 0.40, 16: 0.395}) == 4
    assert choose_batch({1: 1.0, 2: 0.6, 4: 0.5, 8: 0.30}) == 8
    assert choose_batch({4: 0.2}) == 4
    with pytest.raises(ValueError):
        choose_batch({})


def test_calibration_stops_at_out_of_memory_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path))
    seen: list[int] = []

    def forward(x):
        seen.append(x.shape[0])
        if x.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")

    batch, per_tile = calibrate_batch(forward, (16, 16), torch.device("cpu"), "fake", seconds=0.0)
    assert set(per_tile) <= {1, 2, 4, 8} and batch in per_tile and 16 in seen and 32 not in seen
    assert cache_path().is_file()
    seen.clear()
    again, _ = calibrate_batch(forward, (16, 16), torch.device("cpu"), "fake", seconds=0.0)
    assert again == batch and seen == []  # from the cache: nothing ran
    other, _ = calibrate_batch(forward, (24, 24), torch.device("cpu"), "fake", seconds=0.0)
    assert seen  # another window shape is another entry


def test_calibrated_engine_gives_the_plain_engines_output(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path))
    model = load_model("espcn", 4)
    img = photo_tensor("coffee", (90, 90))
    up = Upscaler(model, precision="fp32", tile=32, calibrate=True)
    assert up.calibration and up.batch_size in up.calibration and up.describe()["calibrated"]
    plain = Upscaler(model, precision="fp32", tile=32, batch_size=4)
    assert (up.upscale([img])[0].int() - plain.upscale([img])[0].int()).abs().max() <= 1


def test_cuda_graphs_and_compile_options_on_cpu():
    model = load_model("espcn", 4)
    up = Upscaler(model, precision="fp32", tile=0, cuda_graphs=True)
    assert not up.cuda_graphs  # CPU: nothing to record
    net = CudaGraphed(model.module)
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(net(x), model.module(x))  # off CUDA it is the network itself
    with pytest.raises(ValueError, match="unknown compile mode"):
        compiled(model.module, "fastest")
    assert "max-autotune" in COMPILE_MODES


@cuda
@pytest.mark.parametrize("name", ["espcn", "srresnet"])
def test_cuda_graphs_give_the_eager_output(name):
    model = load_model(name, 4)
    images = [photo_tensor("astronaut", (150, 150)), photo_tensor("coffee", (150, 150))]
    eager = Upscaler(model, tile=64, batch_size=4).upscale(images)
    graphed = Upscaler(model, tile=64, batch_size=4, cuda_graphs=True)
    for _ in range(2):  # the second call replays the recorded graphs
        for a, b in zip(graphed.upscale(images), eager, strict=True):
            assert (a.int() - b.int()).abs().max() <= 1


@cuda
def test_cuda_calibration_picks_a_batch():
    up = Upscaler(load_model("espcn", 4))
    assert up.calibration and up.batch_size in up.calibration


@pytest.mark.slow
def test_compiled_engine_gives_the_plain_engines_output():
    # torch.compile runs on CPU too (Inductor's C++ backend): about 100 s here the first time, cached after.
    model = load_model("espcn", 4)
    img = photo_tensor("coffee", (48, 48))
    up = Upscaler(model, precision="fp32", tile=0, compile=True, compile_mode="default")
    assert up.describe()["compile"] == "default" and up.streams == 1
    plain = Upscaler(model, precision="fp32", tile=0)
    assert (up.upscale([img])[0].int() - plain.upscale([img])[0].int()).abs().max() <= 1
