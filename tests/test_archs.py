import pytest
import torch

from model.archs import ESPCN, SRCNN, Discriminator, Interpolation, SRResNet


@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_shapes_and_size(scale):
    net = SRResNet(scale=scale)
    assert net(torch.rand(2, 3, 12, 17)).shape == (2, 3, 12 * scale, 17 * scale)
    # 16 residual blocks of 64 channels: about 1.5 M parameters, as the paper's generator.
    assert 1.3e6 < sum(p.numel() for p in net.parameters()) < 1.6e6


def test_srresnet_refuses_other_scales():
    with pytest.raises(ValueError, match="scale 2 or 4"):
        SRResNet(scale=3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_any_integer_scale(scale):
    assert ESPCN(scale=scale)(torch.rand(1, 3, 9, 11)).shape == (1, 3, 9 * scale, 11 * scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srcnn_upscales_with_bicubic_first(scale):
    net = SRCNN(scale=scale)
    assert net(torch.rand(1, 3, 10, 13)).shape == (1, 3, 10 * scale, 13 * scale)
    assert [c.kernel_size[0] for c in (net.conv1, net.conv2, net.conv3)] == [9, 1, 5]


@pytest.mark.parametrize("size", [(96, 96), (64, 80), (150, 33)])
def test_discriminator_takes_any_size(size):
    d = Discriminator()
    assert d(torch.rand(2, 3, *size)).shape == (2, 1)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
def test_interpolation_models(mode):
    x = torch.rand(1, 3, 7, 5)
    y = Interpolation(scale=3, mode=mode)(x)
    assert y.shape == (1, 3, 21, 15)
    if mode == "nearest":
        assert torch.equal(y[..., ::3, ::3], x)
    assert list(Interpolation(scale=3, mode=mode).parameters()) == []
