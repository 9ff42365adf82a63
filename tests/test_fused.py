import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.archs import SRResNet
from model.fused import inference_form, shuffle_then_conv_as_conv


def _randomise_bn(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
        if isinstance(m, nn.PReLU):
            m.weight.data.fill_(0.2)


@pytest.mark.parametrize("scale", [2, 4])
def test_inference_form_equals_training_form(scale):
    torch.manual_seed(0)
    net = SRResNet(scale=scale)
    _randomise_bn(net)
    net.eval()
    fast = inference_form(net)
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        assert torch.allclose(net(x), fast(x), atol=2e-5)
    # No batch norm and no 64-channel tensor at full resolution remain.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert fast.tail.out_channels == 12 and fast.tail.kernel_size == (5, 5)


@pytest.mark.parametrize("r,k", [(2, 9), (2, 3), (3, 5)])
def test_shuffle_then_conv_rewrite(r, k):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 3, k, padding=k // 2)
    fused = shuffle_then_conv_as_conv(conv, r)
    v = torch.rand(1, 8 * r * r, 7, 6)
    with torch.no_grad():
        assert torch.allclose(conv(F.pixel_shuffle(v, r)), F.pixel_shuffle(fused(v), r), atol=1e-5)


def test_inference_form_works_in_bf16_channels_last():
    net = SRResNet().eval()
    fast = inference_form(net).to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(x).float()
    assert (out - ref).abs().max() < 0.05
