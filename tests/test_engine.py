import itertools

import pytest
import torch
import torch.nn as nn

from model.engine import EngineConfig, ImageTooLargeError, Progress, Upscaler, resolve_precision, tile_windows
from model.evaluate import make_lr
from model.quality import psnr_y
from model.zoo import list_models, load_model
from tests.conftest import photo_tensor

MODELS_WITH_WEIGHTS = sorted({r["name"] for r in list_models() if r["scale"] == 4 and r["has_weights"]})


def test_tile_windows_cover_the_axis_with_equal_windows():
    for n, tile, overlap in [(300, 64, 16), (200, 64, 24), (65, 64, 8), (1000, 128, 16)]:
        wins = tile_windows(n, tile, overlap)
        assert wins[0][0] == 0 and wins[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(wins))  # cores tile the axis exactly
        assert len({w[3] - w[2] for w in wins}) == 1  # equal windows: they can share a batch
        for core0, core1, w0, w1 in wins:
            assert 0 <= w0 <= core0 < core1 <= w1 <= n and core1 - core0 <= tile
            assert core0 - w0 >= overlap or w0 == 0
            assert w1 - core1 >= overlap or w1 == n
    assert tile_windows(50, 64, 16) == [(0, 50, 0, 50)]
    assert tile_windows(500, 0, 16) == [(0, 500, 0, 500)]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS_WITH_WEIGHTS)
def test_tiled_output_equals_whole_image_output(name):
    img = photo_tensor("astronaut", (200, 300)).float() / 255
    model = load_model(name, 4)
    whole = Upscaler(model, tile=0, precision="fp32").upscale([img])[0]
    tiled = Upscaler(model, tile=64, precision="fp32").upscale([img])[0]
    assert tiled.shape == (3, 800, 1200)
    assert (whole - tiled).abs().max().item() <= 1 / 255


class _Spy(nn.Module):
    """Wraps a network; records batch sizes; can fail like a full device."""

    def __init__(self, net, oom_if=lambda x: False):
        super().__init__()
        self.net, self.oom_if, self.batches = net, oom_if, []

    def forward(self, x):
        if self.oom_if(x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append(x.shape[0])
        return self.net(x)


def _spied(model_name="espcn", oom_if=lambda x: False, **cfg):
    """An engine whose network records each forward pass; one pass per batch unless ``streams`` says more."""
    cfg.setdefault("streams", 1)
    up = Upscaler(load_model(model_name, 4), EngineConfig(precision="fp32", **cfg))
    up.net = _Spy(up.net, oom_if)
    return up


def test_tiles_of_different_images_share_batches():
    images = [photo_tensor("astronaut", (150, 150)), photo_tensor("coffee", (150, 150))]
    up = _spied(tile=64, overlap=8, batch_size=4)
    out = up.upscale(images)
    # 9 equal windows per image: 18 tiles in 5 batches of <= 4; image by image it would take 6.
    assert up.net.batches == [4, 4, 4, 4, 2]
    ref = Upscaler(load_model("espcn", 4), precision="fp32", tile=0).upscale(images)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == torch.uint8 and (a.int() - b.int()).abs().max() <= 1


class _ThreadSpy(nn.Module):
    """Records, per forward pass, its thread, torch's thread count there and the tiles it got."""

    def __init__(self, net):
        super().__init__()
        self.net, self.passes = net, []

    def forward(self, x):
        import threading

        self.passes.append((threading.current_thread().name, torch.get_num_threads(), x.shape[0]))
        return self.net(x)


@pytest.mark.slow
def test_cpu_batches_split_into_single_threaded_passes():
    images = [photo_tensor("astronaut", (150, 150)), photo_tensor("coffee", (150, 150))]
    one = Upscaler(load_model("srresnet", 4), precision="fp32", tile=64, batch_size=4, streams=1).upscale(images)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        up = Upscaler(load_model("srresnet", 4), precision="fp32", tile=64, batch_size=4)  # streams: auto
        up.net = _ThreadSpy(up.net)
        split = up.upscale(images)
        assert torch.get_num_threads() == 2  # the caller's own thread count is left alone
    finally:
        torch.set_num_threads(before)
    # 18 tiles in batches of 4, 4, 4, 4, 2, each split in two one-thread passes, off the calling thread.
    assert [n for _, _, n in up.net.passes] == [2] * 8 + [1, 1] and {t for _, t, _ in up.net.passes} == {1}
    assert all(name.startswith("srgan-engine-pass") for name, _, _ in up.net.passes)
    assert len({name for name, _, _ in up.net.passes}) == 2
    for a, b in zip(split, one, strict=True):
        assert torch.equal(a, b)  # the same tiles through the same network: bit for bit


def test_progress_and_completion_order():
    images = [
        photo_tensor("astronaut", (100, 100)),
        photo_tensor("chelsea", (40, 40)),
        photo_tensor("coffee", (100, 70)),
    ]
    events: list[Progress] = []
    up = Upscaler(load_model("bicubic", 4), tile=48, batch_size=3)
    done = [i for i, _ in up.upscale_iter(images, events.append)]
    assert sorted(done) == [0, 1, 2]
    assert events[-1].done == events[-1].total == 9 + 1 + 6
    assert [e.done for e in events] == list(range(1, 17))
    per_image = {e.image: e for e in events if e.image_done == e.image_total}
    assert {i: e.image_total for i, e in per_image.items()} == {0: 9, 1: 1, 2: 6}


def test_float_in_float_out_and_uint8_in_uint8_out():
    up = Upscaler(load_model("nearest", 2), tile=0)
    f, u = up.upscale([torch.rand(3, 5, 6), torch.randint(0, 256, (3, 5, 6), dtype=torch.uint8)])
    assert f.dtype == torch.float32 and f.shape == (3, 10, 12)
    assert u.dtype == torch.uint8


def test_bad_shapes_are_refused():
    up = Upscaler(load_model("bicubic", 4))
    with pytest.raises(ValueError, match="expected"):
        up.upscale([torch.zeros(3, 0, 10)])
    with pytest.raises(ValueError, match="expected"):
        up.upscale([torch.zeros(4, 10, 10)])


def test_out_of_memory_splits_the_batch():
    img = photo_tensor("astronaut", (120, 120))
    up = _spied(tile=40, overlap=8, batch_size=8, oom_if=lambda x: x.shape[0] > 2)
    out = up.upscale([img])[0]
    assert max(up.net.batches) <= 2 and sum(up.net.batches) == 9
    ref = Upscaler(load_model("espcn", 4), precision="fp32", tile=40, overlap=8).upscale([img])[0]
    assert torch.equal(out, ref)


def test_out_of_memory_retries_an_image_with_smaller_tiles():
    img = photo_tensor("astronaut", (120, 120))
    up = _spied(tile=120, overlap=8, batch_size=4, oom_if=lambda x: x.shape[-1] > 80)
    out = up.upscale([img])[0]
    assert out.shape == (3, 480, 480)
    ref = Upscaler(load_model("espcn", 4), precision="fp32", tile=0).upscale([img])[0]
    assert (out.int() - ref.int()).abs().max() <= 1


def test_an_image_that_never_fits_fails_alone():
    small, large = photo_tensor("chelsea", (30, 30)), photo_tensor("astronaut", (200, 200))
    up = _spied(tile=256, batch_size=4, oom_if=lambda x: x.shape[-1] > 31)
    results = dict(up.upscale_iter([small, large]))
    assert isinstance(results[1], ImageTooLargeError) and "does not fit" in str(results[1])
    assert results[0].shape == (3, 120, 120)


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int4", cpu)
    assert Upscaler(load_model("bicubic", 4), precision="bf16").precision == "fp32"  # interpolation stays exact


def _psnr_gap_bf16(hr_images: list[torch.Tensor]) -> float:
    model = load_model("srresnet", 4)
    fp32 = Upscaler(model, precision="fp32", tile=0)
    bf16 = Upscaler(model, precision="bf16", tile=0)
    gaps = []
    for hr in hr_images:
        hr, lr = make_lr(hr, 4)
        gaps.append(psnr_y(fp32.upscale([lr])[0], hr, 4) - psnr_y(bf16.upscale([lr])[0], hr, 4))
    return sum(gaps) / len(gaps)


def test_bf16_costs_no_quality_on_photos():
    photos = [photo_tensor(n, (128, 128)) for n in ("astronaut", "chelsea", "coffee")]
    assert abs(_psnr_gap_bf16(photos)) < 0.05


def test_bf16_costs_no_quality_on_set5(set5):
    from model.imageio import decode

    hrs = [decode(p.read_bytes()).rgb for p in sorted(set5.glob("*.png"))]
    assert abs(_psnr_gap_bf16(hrs)) < 0.05


def test_outputs_round_like_the_float_reference_and_are_hwc_backed():
    img = photo_tensor("coffee", (70, 90))
    model = load_model("espcn", 4)
    for tile in (0, 32):
        up = Upscaler(model, precision="fp32", tile=tile, overlap=8)
        u8 = up.upscale([img])[0]
        f = up.upscale([img.float() / 255])[0]
        assert u8.dtype == torch.uint8 and f.dtype == torch.float32 and u8.shape == f.shape == (3, 280, 360)
        assert f.min() >= 0 and f.max() <= 1
        assert torch.equal(u8, f.mul(255).round().to(torch.uint8))  # clamp, scale, round: the same numbers
        assert u8.permute(1, 2, 0).is_contiguous()  # HWC memory: the encoder's view costs no copy
        u8.add_(0)  # a normal tensor: callers may update it in place


def test_to_host_mixed_batch():
    from model.accel import to_host

    y = (torch.rand(2, 3, 8, 8) * 1.4 - 0.2).contiguous(memory_format=torch.channels_last)
    ref = y.clamp(0, 1)
    q, f, event = to_host(y.clone(), u8=True, f32=True)
    assert event is None and f is not None and q is not None
    assert torch.equal(f, ref) and torch.equal(q, ref.mul(255).round().to(torch.uint8))
    assert q.is_contiguous(memory_format=torch.channels_last)


def test_to_host_nchw_batch_comes_back_nhwc():
    """Interpolation's matmuls write NCHW: the uint8 result is still NHWC in memory (the encoder's HWC view of it
    is then free), with the same numbers."""
    from model.accel import to_host

    y = torch.rand(2, 3, 5, 7) * 1.4 - 0.2
    q, f, _ = to_host(y.clone(), u8=True, f32=True)
    assert q is not None and f is not None
    assert torch.equal(q, y.clamp(0, 1).mul(255).round().to(torch.uint8)) and torch.equal(f, y.clamp(0, 1))
    assert q.is_contiguous(memory_format=torch.channels_last)
    out = Upscaler(load_model("bicubic", 4), tile=0).upscale([torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8)])
    assert out[0].permute(1, 2, 0).is_contiguous()


def test_small_networks_get_large_tiles_and_their_exact_receptive_radius():
    from model.engine import default_tile, receptive_radius

    espcn = load_model("espcn", 4)
    assert receptive_radius(espcn.module) == 4  # 5x5, 3x3, 3x3 convs: 2 + 1 + 1
    up = Upscaler(espcn, precision="fp32")
    assert up.overlap == 4 and up.tile == default_tile(espcn.module, False) == 256
    assert Upscaler(load_model("srresnet", 4)).tile == 128  # SRResNet keeps its cache-friendly tiles
    img = photo_tensor("astronaut", (150, 170))
    whole = Upscaler(espcn, precision="fp32", tile=0).upscale([img])[0]
    tiled = Upscaler(espcn, precision="fp32", tile=40).upscale([img])[0]  # overlap: the receptive radius
    assert (whole.int() - tiled.int()).abs().max() <= 1
