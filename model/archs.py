"""The networks of the SRGAN paper line, as plain ``nn.Module`` classes in their training form.

All generators take RGB in [0, 1] at low resolution and return RGB at ``scale`` times the size, nominally in
[0, 1] (callers clamp). ``model.fused`` derives faster inference forms with identical outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.imresize import imresize

__all__ = ["SRCNN", "ESPCN", "SRResNet", "Discriminator", "Interpolation", "ARCHS"]


class SRCNN(nn.Module):
    """SRCNN (Dong et al. 2014, the 9-1-5 network), run on a bicubic-upscaled input.

    The bicubic upscale is part of the module so every model takes the same low-resolution input. Convs use
    'same' padding so the output keeps the full size (the paper trained without padding).

    Args:
        scale: upscaling factor of the built-in bicubic (default 4).
        num_channels: image channels (default 3, RGB; the paper's main model used Y only).
        n1: filters of the first layer (default 64).
        n2: filters of the second layer (default 32).
        f1: kernel size of the first layer (default 9).
        f2: kernel size of the second layer (default 1).
        f3: kernel size of the last layer (default 5).
    """

    def __init__(
        self, scale: int = 4, num_channels: int = 3, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 1, f3: int = 5
    ):
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(num_channels, n1, f1, padding=f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.conv3 = nn.Conv2d(n2, num_channels, f3, padding=f3 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = imresize(x, self.scale)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.conv3(x)


class ESPCN(nn.Module):
    """ESPCN (Shi et al. 2016): three convs in low resolution and a sub-pixel (pixel shuffle) output.

    Args:
        scale: any integer upscaling factor (default 4).
        num_channels: image channels (default 3).
        n1: filters of the first layer (default 64).
        n2: filters of the second layer (default 32).
        f1: kernel size of the first layer (default 5).
        f2: kernel size of the second layer (default 3).
        f3: kernel size of the sub-pixel layer (default 3).
    """

    def __init__(
        self, scale: int = 4, num_channels: int = 3, n1: int = 64, n2: int = 32, f1: int = 5, f2: int = 3, f3: int = 3
    ):
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(num_channels, n1, f1, padding=f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.conv3 = nn.Conv2d(n2, num_channels * scale * scale, f3, padding=f3 // 2)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.shuffle(self.conv3(x))


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus identity, the SRResNet block."""

    def __init__(self, num_feat: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_feat)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """conv (num_feat -> 4 num_feat), pixel shuffle x2, PReLU."""

    def __init__(self, num_feat: int):
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """SRResNet, also the SRGAN generator (Ledig et al. 2017, figure 4).

    Args:
        scale: 2 or 4 (one x2 sub-pixel stage per factor of 2; default 4).
        num_channels: image channels (default 3).
        num_feat: feature maps of every body conv (default 64).
        num_blocks: residual blocks (default 16).
    """

    def __init__(self, scale: int = 4, num_channels: int = 3, num_feat: int = 64, num_blocks: int = 16):
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"SRResNet supports scale 2 or 4, not {scale}")
        self.scale = scale
        self.head = nn.Conv2d(num_channels, num_feat, 9, padding=4)
        self.head_act = nn.PReLU()
        self.body = nn.Sequential(*(ResidualBlock(num_feat) for _ in range(num_blocks)))
        self.body_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=False)
        self.body_bn = nn.BatchNorm2d(num_feat)
        self.upsample = nn.Sequential(*(UpsampleBlock(num_feat) for _ in range(int(math.log2(scale)))))
        self.tail = nn.Conv2d(num_feat, num_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head_act(self.head(x))
        feat = feat + self.body_bn(self.body_conv(self.body(feat)))
        return self.tail(self.upsample(feat))


class Discriminator(nn.Module):
    """SRGAN discriminator: 8 convs 64 -> 512 (stride 2 every second), LeakyReLU 0.2, BN, dense 1024, 1 logit.

    Adaptive average pooling to ``pool`` x ``pool`` before the dense layers makes any input size work (a 96x96
    crop gives 6x6 maps, as in the paper, where pooling is then the identity).

    Args:
        num_channels: image channels (default 3).
        num_feat: filters of the first conv, doubled every two convs (default 64).
        pool: spatial size fed to the dense layer (default 6).
        dense: units of the hidden dense layer (default 1024).
    """

    def __init__(self, num_channels: int = 3, num_feat: int = 64, pool: int = 6, dense: int = 1024):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = num_channels
        for i in range(8):
            out_ch = num_feat * 2 ** (i // 2)
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=1 + i % 2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * pool * pool, dense), nn.LeakyReLU(0.2, inplace=True), nn.Linear(dense, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class Interpolation(nn.Module):
    """A weightless upscaler so the classic baselines run through the same engine and API.

    Args:
        scale: integer upscaling factor (default 4).
        mode: ``"bicubic"`` (MATLAB-compatible imresize), ``"bilinear"`` (imresize, triangle kernel) or
            ``"nearest"`` (pixel replication).
    """

    def __init__(self, scale: int = 4, mode: str = "bicubic"):
        super().__init__()
        if mode not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"unknown interpolation {mode!r}; choose bicubic, bilinear or nearest")
        self.scale, self.mode = scale, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return imresize(x, self.scale, kernel="cubic" if self.mode == "bicubic" else "linear")


# Architecture name -> class. Names are what model cards record in their "arch" field.
ARCHS: dict[str, type[nn.Module]] = {
    "srcnn": SRCNN,
    "espcn": ESPCN,
    "srresnet": SRResNet,
    "discriminator": Discriminator,
    "interpolation": Interpolation,
}
