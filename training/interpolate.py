"""Network interpolation (Wang et al., ESRGAN 2018): blend an adversarially trained generator with the
PSNR-oriented one it started from, parameter by parameter. One alpha trades the adversarial stage's texture
against its artefacts (the periodic dot pattern a short SRGAN run leaves) without retraining anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model.weights import ModelCard, WeightsError, load_weights, save_weights

__all__ = ["interpolate"]


def interpolate(
    adversarial: str | Path, psnr: str | Path, alpha: float, out: str | Path, bench: list[str | Path] | None = None
) -> ModelCard:
    """Write ``alpha * adversarial + (1 - alpha) * psnr`` to ``out`` with the adversarial card, amended.

    Both files must hold the same architecture; ``bench`` folders are scored into the new card.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    net_a, card_a = load_weights(adversarial)
    net_p, card_p = load_weights(psnr)
    if (card_a.arch, card_a.scale, card_a.arch_params) != (card_p.arch, card_p.scale, card_p.arch_params):
        raise WeightsError(
            f"cannot interpolate {card_a.arch} x{card_a.scale} {card_a.arch_params} with "
            f"{card_p.arch} x{card_p.scale} {card_p.arch_params}"
        )
    state_p = net_p.state_dict()
    with torch.no_grad():
        for name, tensor in net_a.state_dict().items():
            if tensor.is_floating_point():
                tensor.mul_(alpha).add_(state_p[name], alpha=1.0 - alpha)
    card = ModelCard.from_dict(json.loads(card_a.to_json()))
    card.sha256 = card.created = ""
    card.metrics = {"eval": card_a.metrics.get("eval", "srgan eval")}
    card.recipe = {
        **card.recipe,
        "interpolation": {
            "alpha": alpha,
            "adversarial_sha256": card_a.sha256,
            "psnr_sha256": card_p.sha256,
            "adversarial_metrics": {k: v for k, v in card_a.metrics.items() if k != "eval"},
            "how": "alpha * adversarial + (1 - alpha) * psnr-oriented, every parameter and BN statistic",
        },
    }
    card.notes = (
        f"{card_a.notes} Network interpolation: {alpha} x this SRGAN run + {1 - alpha:g} x the "
        f"SRResNet it started from ({card_p.sha256[:12]})."
    ).strip()
    card = save_weights(net_a, out, card)
    if bench:
        from model.evaluate import card_metrics, evaluate
        from model.zoo import load_model

        loaded = load_model(card.name, int(card.scale), path=Path(out).with_suffix(".safetensors"))
        for folder in bench:
            card.metrics[Path(folder).name] = card_metrics(evaluate(loaded, folder))
        Path(out).with_suffix(".json").write_text(card.to_json())
    return card
