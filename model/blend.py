"""The realism knob: network interpolation (Wang et al., ESRGAN 2018) between the PSNR-oriented SRResNet and the
adversarially trained SRGAN of the same architecture, per request.

``realism`` 0 is SRResNet (smooth, highest PSNR), 1 is SRGAN (sharpest textures), and a value between blends
every parameter and BN statistic: ``realism * srgan + (1 - realism) * srresnet``. The ends are the source
tensors themselves (not ``0 * a + 1 * b``), so 0 and 1 reproduce the two models bit for bit. A blend is a new
network with its own identity: its "sha256" is derived from the two weights' sha256 and the value, so results
and caches tell blends apart. ``training/interpolate.py`` writes such a blend to a file; this builds it in
memory for serving.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the gateway checks realism values without importing torch
    import torch

    from model.specs import LoadedModel

__all__ = ["REALISM_MODELS", "REALISM_STEP", "blend_models", "blend_states", "check_realism", "realism_key"]

# (PSNR-oriented, adversarial): the pair a realism value blends, and the model name a blend is served as.
REALISM_MODELS = ("srresnet", "srgan")
# Values are rounded to this step, so that a cache holds a bounded number of blends (101 at most per pair).
REALISM_STEP = 0.01


def check_realism(value: float) -> float:
    """``value`` as a realism: finite, in 0..1, rounded to :data:`REALISM_STEP`; ValueError otherwise."""
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"realism must be a number from 0 to 1, not {value!r}")
    return realism_key(v)


def realism_key(value: float) -> float:
    """The cached value ``value`` stands for (rounded to :data:`REALISM_STEP`)."""
    return round(round(float(value) / REALISM_STEP) * REALISM_STEP, 6)


def blend_states(
    psnr: dict[str, torch.Tensor], adversarial: dict[str, torch.Tensor], realism: float
) -> dict[str, torch.Tensor]:
    """``realism * adversarial + (1 - realism) * psnr`` for every floating-point tensor (integer ones, such as
    BN's batch counters, come from ``psnr``); the ends are exact copies of one side."""
    import torch

    from model.weights import WeightsError

    if psnr.keys() != adversarial.keys():
        raise WeightsError("cannot blend two networks with different parameters")
    out = {}
    for name, p in psnr.items():
        a = adversarial[name]
        if p.shape != a.shape:
            raise WeightsError(f"cannot blend {name}: shapes {tuple(p.shape)} and {tuple(a.shape)}")
        if realism == 0.0 or not p.is_floating_point():
            out[name] = p.clone()
        elif realism == 1.0:
            out[name] = a.clone()
        else:
            out[name] = torch.lerp(p.double(), a.double(), realism).to(p.dtype)
    return out


def blend_models(psnr: LoadedModel, adversarial: LoadedModel, realism: float) -> LoadedModel:
    """A model that serves ``realism`` between ``psnr`` (SRResNet) and ``adversarial`` (SRGAN).

    Named as the adversarial model, with its tiling overlap (the larger receptive-field budget) except at 0,
    where it is the PSNR model's spec: so 0 and 1 tile exactly as the two models do."""
    from model.specs import LoadedModel
    from model.weights import ModelCard, WeightsError

    realism = check_realism(realism)
    if psnr.card is None or adversarial.card is None:
        raise WeightsError("a blend needs two learned models with cards")
    if (psnr.card.arch, psnr.scale, psnr.card.arch_params) != (
        adversarial.card.arch,
        adversarial.scale,
        adversarial.card.arch_params,
    ):
        raise WeightsError(
            f"cannot blend {psnr.name} ({psnr.card.arch} x{psnr.scale}) with "
            f"{adversarial.name} ({adversarial.card.arch} x{adversarial.scale})"
        )
    module = copy.deepcopy(adversarial.module)
    module.load_state_dict(blend_states(psnr.module.state_dict(), adversarial.module.state_dict(), realism))
    module.eval()
    card = ModelCard.from_dict(json.loads(adversarial.card.to_json()))
    sha_p, sha_a = psnr.card.sha256, adversarial.card.sha256
    card.sha256 = hashlib.sha256(f"realism {realism:.2f} {sha_a} {sha_p}".encode()).hexdigest()
    card.recipe = {
        "blend": {"realism": realism, "adversarial_sha256": sha_a, "psnr_sha256": sha_p},
        "how": "realism * adversarial + (1 - realism) * psnr-oriented, every parameter and BN statistic",
    }
    card.notes = f"Realism {realism:.2f}: {realism:.2f} x {adversarial.name} + {1 - realism:.2f} x {psnr.name}."
    spec = psnr.spec if realism == 0.0 else adversarial.spec
    spec = replace(spec, name=adversarial.name) if spec.name != adversarial.name else spec
    return LoadedModel(adversarial.name, adversarial.scale, module, spec, card, None, None)
