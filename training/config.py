"""Typed training configuration. Defaults are the SRGAN paper's (Ledig et al. 2017, section 3.2).

A recipe is a TOML file whose keys are :class:`TrainConfig` fields; every field can also be overridden from
the command line. The stage's paper defaults apply first, then the recipe, then the command line.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "STAGES", "STAGE_ARCH", "stage_arch", "stage_defaults", "load_config", "RECIPES_DIR"]

STAGES = ("srresnet", "srgan", "espcn", "srcnn")
# The architecture (``model.archs.ARCHS`` name) each stage trains: the srgan stage trains an SRResNet generator.
STAGE_ARCH = {"srresnet": "srresnet", "srgan": "srresnet", "espcn": "espcn", "srcnn": "srcnn"}


def stage_arch(stage: str) -> str:
    """The architecture ``stage`` trains; a ValueError naming the stages otherwise."""
    if stage not in STAGE_ARCH:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return STAGE_ARCH[stage]


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class TrainConfig:
    stage: str = "srresnet"
    scale: int = 4
    data: list[str] = field(default_factory=list)  # folders of HR images, searched recursively
    val: list[str] = field(default_factory=list)  # HR folders evaluated every val_every steps
    bench: list[str] = field(default_factory=list)  # HR folders scored into the exported model card
    out: str = ""  # run folder (default runs/<stage>)
    name: str = ""  # exported model name (default: the stage)

    # Optimisation (paper: batch 16 of 96x96 HR crops, Adam lr 1e-4, beta1 0.9)
    steps: int = 1_000_000
    batch_size: int = 16
    crop: int = 96  # HR crop side; the LR input is crop / scale
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: str = "step"  # step | cosine | constant
    lr_milestones: list[int] = field(default_factory=list)  # steps where a "step" schedule multiplies by gamma
    lr_gamma: float = 0.1
    lr_min: float = 1e-7  # floor of the cosine schedule
    warmup_steps: int = 0
    pixel_loss: str = "mse"  # mse | l1
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    ema: float = 0.0  # decay of an exponential moving average of the generator; 0 = off
    icnr: bool = False  # ICNR-initialise sub-pixel convs (no dot grid at the start; training/init.py)

    # SRGAN stage
    init: str = ""  # generator weights (.safetensors) to start from (srgan: the SRResNet of stage 1)
    vgg_weights: str = ""  # torchvision VGG19 state dict, a HED .h5 stand-in, or "random" (smoke tests)
    vgg_layer: str = "5_4"  # phi_i,j of the paper: features after the j-th conv (and ReLU) before pool i
    content_scale: float = 1 / 12.75  # the paper rescales VGG features by 1/12.75
    adv_weight: float = 1e-3
    pixel_weight: float = 0.0  # optional pixel loss added to the perceptual loss
    d_lr: float = 0.0  # discriminator lr (0 = same as lr)

    # Running
    device: str = "auto"
    amp: str = "auto"  # auto | off | bf16 | fp16 (auto: bf16/fp16 on CUDA, off on CPU)
    channels_last: bool = True
    compile: bool = False
    workers: int = 4
    cache_images: bool = True  # keep decoded training images in memory (small data sets)
    seed: int = 0
    time_limit: float = 0.0  # seconds of training after which the run stops and exports; 0 = none
    log_every: int = 50
    val_every: int = 1000
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    val_max_images: int = 20
    progress: bool = True

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if self.pixel_loss not in ("mse", "l1"):
            raise ValueError(f"pixel_loss must be mse or l1, not {self.pixel_loss!r}")
        if self.lr_schedule not in ("step", "cosine", "constant"):
            raise ValueError(f"lr_schedule must be step, cosine or constant, not {self.lr_schedule!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, not {self.amp!r}")
        if self.crop % self.scale:
            raise ValueError(f"crop {self.crop} must be a multiple of scale {self.scale}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.name = self.name or self.stage
        self.out = self.out or str(Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def stage_defaults(stage: str) -> dict[str, Any]:
    """The paper's settings for each stage (ESPCN and SRCNN: their own papers' spirit, with Adam)."""
    if stage == "srresnet":
        return {"steps": 1_000_000, "lr": 1e-4, "pixel_loss": "mse", "lr_schedule": "constant"}
    if stage == "srgan":
        # 1e5 steps at 1e-4, then 1e5 at 1e-5; VGG54 content loss + 1e-3 adversarial loss.
        return {"steps": 200_000, "lr": 1e-4, "lr_schedule": "step", "lr_milestones": [100_000], "lr_gamma": 0.1}
    if stage == "espcn":
        return {"steps": 200_000, "lr": 1e-3, "pixel_loss": "mse", "lr_schedule": "cosine", "crop": 96}
    if stage == "srcnn":
        return {"steps": 200_000, "lr": 3e-4, "pixel_loss": "mse", "lr_schedule": "cosine", "crop": 96}
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML or command-line value into the field's type, with an error naming the field."""
    f = _field_types().get(name)
    if f is None:
        raise ValueError(f"unknown config field {name!r}; known: {', '.join(sorted(_field_types()))}")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            return int(float(value)) if isinstance(value, str) else int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            items = value.split(",") if isinstance(value, str) else list(value)
            if name in ("lr_milestones",):
                return [int(float(x)) for x in items]
            if name == "betas":
                return tuple(float(x) for x in items)
            return [str(x) for x in items]
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"config field {name!r} cannot take {value!r}") from None


def load_config(stage: str, recipe: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Paper defaults for ``stage``, then the recipe file (TOML), then ``overrides``."""
    values: dict[str, Any] = {"stage": stage, **stage_defaults(stage)}
    if recipe:
        path = Path(recipe)
        if not path.exists() and (RECIPES_DIR / path).with_suffix(".toml").exists():
            path = (RECIPES_DIR / path).with_suffix(".toml")
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
            raise FileNotFoundError(f"recipe {recipe} not found (shipped recipes: {known})") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"recipe {path} is not valid TOML: {e}") from None
        if data.get("stage", stage) != stage:
            raise ValueError(f"recipe {path} is for stage {data['stage']!r}, not {stage!r}")
        values.update({k: _coerce(k, v) for k, v in data.items()})
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = _coerce(k, v)
    return TrainConfig(**values)
