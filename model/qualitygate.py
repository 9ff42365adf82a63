"""The quality gate a new model version must pass: its scores on the gate set (``model/gate``, or any folder of
HR images) and the verdict against a baseline. PSNR-Y no worse than the baseline's (the active version, or
bicubic when none is active) minus a tolerance, and pictures that look right: no more dot grid than
``GATE_LATTICE_RATIO`` times HR's own (:func:`model.quality.lattice_score`) and no mean colour shift beyond
``GATE_COLOUR_LEVELS`` on any channel (:func:`model.quality.colour_error`). :mod:`model.registry` decides
which baseline and what a failed gate means."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

__all__ = ["QualityGate", "GateError", "gate_text", "GATE_DIR", "GATE_LATTICE_RATIO", "GATE_COLOUR_LEVELS"]

GATE_DIR = Path(__file__).resolve().parent / "gate"
# The picture checks of the gate (measured on the shipped gate set; more in the README's Models table): the
# shipped SRResNet, ESPCN and SRCNN, which show no grid, score 0.98x, 0.39x and 0.87x HR's lattice and stay within
# 0.3 level per channel; the shipped SRGAN, whose dot grid is visible, scores 54x and darkens R by 3.3 levels
# (31x on Set14, 11x on flat sky). 1.5x leaves the grid-free models room for the noise of 5 small images and is
# still far below any grid one can see; 0.5 level is the bound (the shipped SRResNet's worst is 0.28).
GATE_LATTICE_RATIO = 1.5
GATE_COLOUR_LEVELS = 0.5


class GateError(ValueError):
    """The gate set is missing or empty (the registry answers it as ``no_gate_set``)."""


class QualityGate:
    """Scores on ``gate_dir`` (cached by model identity and the set's fingerprint) and the verdict."""

    def __init__(
        self,
        gate_dir: str | Path | None = None,
        *,
        tolerance_db: float = 0.1,
        lattice_ratio: float = GATE_LATTICE_RATIO,
        colour_levels: float = GATE_COLOUR_LEVELS,
    ):
        self.gate_dir = Path(gate_dir) if gate_dir else GATE_DIR
        self.tolerance_db = float(tolerance_db)
        self.lattice_ratio = float(lattice_ratio)
        self.colour_levels = float(colour_levels)
        self._scores: dict[tuple, dict[str, Any]] = {}  # (name, scale, sha256, gate fingerprint) -> score
        self._score_lock = threading.Lock()

    def fingerprint(self) -> str:
        from model.evaluate import list_images

        h = hashlib.sha256()
        try:
            images = list_images(self.gate_dir)
        except FileNotFoundError:
            raise GateError(f"the quality-gate folder {self.gate_dir} does not exist") from None
        if not images:
            raise GateError(f"the quality-gate folder {self.gate_dir} holds no images")
        for p in images:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
        return h.hexdigest()[:16]

    def score(self, loaded) -> dict[str, Any]:
        """PSNR-Y / SSIM-Y, dot grid and colour error of a loaded model on the gate set, cached by sha256."""
        from model.evaluate import evaluate

        key = (loaded.name, loaded.scale, loaded.version, self.fingerprint())
        cacheable = loaded.card is not None or loaded.spec.weightless  # a card-less network has no identity
        with self._score_lock:
            hit = self._scores.get(key) if cacheable else None
        if hit is not None:
            return hit
        r = evaluate(loaded, self.gate_dir)
        m = r["mean"]
        out = {
            "set": str(self.gate_dir),
            "images": len(r["images"]),
            "psnr_y": round(m["psnr_y"], 4),
            "ssim_y": round(m["ssim_y"], 4),
            "lattice_ratio": round(m["lattice_ratio"], 3),
            "colour_error": [round(c, 3) for c in m["colour_error"]],
        }
        if cacheable:
            with self._score_lock:
                self._scores[key] = out
        return out

    def verdict(self, cand: dict[str, Any], base: dict[str, Any], base_name: str) -> dict[str, Any]:
        """The gate record of a candidate's scores against the baseline's: passed when its PSNR-Y is at least
        the baseline's minus the tolerance and its pictures pass."""
        psnr_passed = cand["psnr_y"] >= base["psnr_y"] - self.tolerance_db
        lattice_passed = cand["lattice_ratio"] <= self.lattice_ratio
        colour_passed = max(abs(c) for c in cand["colour_error"]) <= self.colour_levels
        return {
            **cand,
            "baseline": base_name,
            "baseline_psnr_y": base["psnr_y"],
            "baseline_ssim_y": base["ssim_y"],
            "tolerance_db": self.tolerance_db,
            "delta_db": round(cand["psnr_y"] - base["psnr_y"], 4),
            "psnr_passed": bool(psnr_passed),
            "max_lattice_ratio": self.lattice_ratio,
            "max_colour_levels": self.colour_levels,
            "pictures_passed": bool(lattice_passed and colour_passed),
            "passed": bool(psnr_passed and lattice_passed and colour_passed),
        }


def gate_text(gate: dict[str, Any]) -> str:
    """Why ``gate`` failed, in words (gates recorded before the picture checks have only the PSNR part)."""
    why = []
    if not gate.get("psnr_passed", gate.get("passed", True)):
        why.append(
            f"PSNR-Y {gate['psnr_y']:.3f} dB on the gate set ({gate['images']} images) is more than "
            f"{gate['tolerance_db']} dB below {gate['baseline']}'s {gate['baseline_psnr_y']:.3f} dB"
        )
    if "lattice_ratio" in gate and gate["lattice_ratio"] > gate["max_lattice_ratio"]:
        why.append(
            f"it paints a dot grid: {gate['lattice_ratio']:.2f}x the ground truth's on the gate set "
            f"(at most {gate['max_lattice_ratio']}x)"
        )
    if "colour_error" in gate and max(abs(c) for c in gate["colour_error"]) > gate["max_colour_levels"]:
        rgb = "/".join(f"{c:+.2f}" for c in gate["colour_error"])
        why.append(f"it shifts colours: mean error R/G/B {rgb} levels (at most {gate['max_colour_levels']})")
    return "; ".join(why or ["below the quality gate"]) + "; use force to go ahead anyway"
