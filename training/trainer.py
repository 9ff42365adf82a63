"""The trainer of every stage: SRResNet/ESPCN/SRCNN with a pixel loss, SRGAN with VGG + adversarial loss; one
step, EMA, checkpoints that hold everything needed to continue exactly, evaluation and export of servable
weights. The run around it (plan, logging, validation, stopping) is :mod:`training.loop`.

Runs on CPU, one GPU (bf16 autocast, or fp16 with a gradient scaler) or several GPUs/nodes under ``torchrun``
(DistributedDataParallel; only rank 0 writes).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.archs import ARCHS, Discriminator
from model.weights import ModelCard, load_weights, save_weights
from model.zoo import SPECS, LoadedModel
from training.config import TrainConfig, stage_arch
from training.data import degrade
from training.losses import VGGSource, load_vgg, pixel_loss

__all__ = ["Trainer", "CHECKPOINT_FORMAT", "build_generator", "generator_arch"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def _unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile


def build_generator(cfg: TrainConfig) -> nn.Module:
    return ARCHS[stage_arch(cfg.stage)](scale=cfg.scale)


def generator_arch(cfg: TrainConfig) -> tuple[str, dict[str, Any]]:
    arch = stage_arch(cfg.stage)
    if arch == "srresnet":
        net = build_generator(cfg)
        return arch, {
            "scale": cfg.scale,
            "num_channels": 3,
            "num_feat": 64,
            "num_blocks": len(cast(nn.Sequential, net.body)),
        }
    return arch, {"scale": cfg.scale}


class Trainer:
    def __init__(self, cfg: TrainConfig, *, rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.is_main = rank == 0
        if device is None:
            if cfg.device == "auto":
                device = torch.device(
                    f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
                )
            else:
                device = torch.device(cfg.device)
        self.device = device
        self.out = Path(cfg.out)
        amp = cfg.amp
        if amp == "auto":
            amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
        self.amp = amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels once

        # The VGG weights are checked first: a run that cannot compute its loss must stop at once.
        self.vgg: nn.Module | None = None
        self.vgg_source: VGGSource | None = None
        if cfg.stage == "srgan":
            vgg, self.vgg_source = load_vgg(cfg.vgg_weights, cfg.vgg_layer)
            self.vgg = self._place(vgg)

        torch.manual_seed(cfg.seed)
        self.g = build_generator(cfg)
        if cfg.icnr:  # before --init: weights loaded from a file replace it
            from training.init import apply_icnr

            apply_icnr(self.g)
        self.init_recipe: dict[str, Any] = {}
        self.init_source = self._init_from(cfg.init) if cfg.init or cfg.stage == "srgan" else ""
        self._place(self.g)
        self.d = self._place(Discriminator()) if cfg.stage == "srgan" else None
        self.ema = copy.deepcopy(self.g).eval().requires_grad_(False) if cfg.ema > 0 else None

        fused = {"fused": True} if device.type == "cuda" else {}  # one kernel per step instead of hundreds
        self.opt_g = torch.optim.Adam(
            self.g.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fused
        )
        self.opt_d = (
            torch.optim.Adam(self.d.parameters(), lr=cfg.d_lr or cfg.lr, betas=cfg.betas, **fused)
            if self.d is not None
            else None
        )
        self.total_steps = cfg.steps
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, self.lr_factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, self.lr_factor) if self.opt_d is not None else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.step = 0
        self.train_seconds = 0.0
        self.log_every = cfg.log_every  # train() shortens it for a short run (run_plan)

        self.g_train: nn.Module = self.g
        self.d_train: nn.Module | None = self.d
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.g_train = nn.parallel.DistributedDataParallel(self.g, device_ids=ids)
            if self.d is not None:
                self.d_train = nn.parallel.DistributedDataParallel(self.d, device_ids=ids)
        self._g_eager = self.g_train
        self._compile_ok = False
        if cfg.compile:
            self.g_train = cast(nn.Module, torch.compile(self.g_train))

    # -- setup ------------------------------------------------------------------------------------------------
    def _place(self, module: nn.Module) -> nn.Module:
        """``module`` moved to the device in the run's memory format (in place; returned for chaining)."""
        return module.to(self.device).to(memory_format=self.memory_format)

    def _init_from(self, init: str) -> str:
        if init == "scratch":
            return "random initialisation (no SRResNet pre-training)"
        if not init:
            raise FileNotFoundError(
                "the srgan stage starts from the SRResNet of stage 1: pass --init "
                "PATH/srresnet_x4.safetensors (or --init scratch to start from random weights)"
            )
        net, card = load_weights(init)
        arch, _ = generator_arch(self.cfg)
        if card.arch != arch or int(card.scale) != self.cfg.scale:
            raise ValueError(
                f"--init {init} is {card.arch} x{card.scale}; the {self.cfg.stage} stage needs {arch} x{self.cfg.scale}"
            )
        self.g.load_state_dict(net.state_dict())
        self.init_recipe = card.recipe
        return f"{Path(init).name} (sha256 {card.sha256[:12]}...)"

    def lr_factor(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule == "constant":
            return warm
        if cfg.lr_schedule == "step":
            return warm * cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
        progress = min(1.0, step / max(1, self.total_steps))
        floor = cfg.lr_min / cfg.lr
        return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- steps ------------------------------------------------------------------------------------------------
    def batch_to_device(self, hr_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hr, lr = degrade(hr_u8.to(self.device, non_blocking=True), self.cfg.scale)
        return (hr.contiguous(memory_format=self.memory_format), lr.contiguous(memory_format=self.memory_format))

    def _optimize(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(opt)

    # Steps return losses as detached tensors: reading them (.item()) would wait for the GPU every step.
    def pixel_step(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast():
            sr = self.g_train(lr)
        loss = pixel_loss(self.cfg.pixel_loss, sr.float(), hr)
        self._optimize(loss, self.opt_g, self.g.parameters())
        self.scaler.update()
        return {"loss": loss.detach()}

    def generator_step(self, hr: torch.Tensor, lr: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Perceptual loss step of the generator, with the discriminator frozen. Returns (losses, SR)."""
        assert self.d is not None and self.vgg is not None
        self.d.requires_grad_(False)
        with self.autocast():
            sr = self.g_train(lr)
            sr_f = sr.float()
            content = F.mse_loss(self.vgg(sr_f) * self.cfg.content_scale, self.vgg(hr) * self.cfg.content_scale)
            # Non-saturating adversarial loss -log D(G(LR)); the bare module: no DDP hooks on a frozen net.
            logits = _unwrap(self.d)(sr_f)
        adv = F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits, dtype=torch.float32))
        loss = content.float() + self.cfg.adv_weight * adv
        if self.cfg.pixel_weight:
            loss = loss + self.cfg.pixel_weight * pixel_loss(self.cfg.pixel_loss, sr_f, hr)
        self._optimize(loss, self.opt_g, self.g.parameters())
        self.d.requires_grad_(True)
        return {"loss_g": loss.detach(), "content": content.detach().float(), "adv": adv.detach()}, sr.detach()

    def discriminator_step(self, hr: torch.Tensor, sr: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.d is not None and self.d_train is not None and self.opt_d is not None
        # Real and fake in one forward: DDP allows one forward per backward.
        with self.autocast():
            logits = self.d_train(torch.cat([hr, sr.detach().float()])).float()
        real, fake = logits.chunk(2)
        loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )
        self._optimize(loss, self.opt_d, self.d.parameters())
        with torch.no_grad():
            return {"loss_d": loss.detach(), "d_real": torch.sigmoid(real).mean(), "d_fake": torch.sigmoid(fake).mean()}

    def train_step(self, hr_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.g_train is self._g_eager:
            return self._train_step(hr_u8)
        try:  # torch.compile problems surface in the first forward or backward
            losses = self._train_step(hr_u8)
        except Exception as e:
            if self._compile_ok or "out of memory" in str(e).lower():
                raise
            log.warning("torch.compile failed (%s: %s); continuing in eager mode", type(e).__name__, e)
            self.g_train = self._g_eager
            return self._train_step(hr_u8)
        self._compile_ok = True
        return losses

    def _train_step(self, hr_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        self.g.train()
        hr, lr = self.batch_to_device(hr_u8)
        if self.cfg.stage == "srgan":
            assert self.d is not None and self.sched_d is not None
            self.d.train()
            losses, sr = self.generator_step(hr, lr)
            losses.update(self.discriminator_step(hr, sr))
            self.scaler.update()
            self.sched_d.step()
        else:
            losses = self.pixel_step(hr, lr)
        self.sched_g.step()
        if self.ema is not None:
            self._update_ema()
        self.step += 1
        return losses

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.ema is not None
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))  # short warm-up: early EMA tracks fast
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.g.parameters()], 1 - decay)
        buffers = list(self.ema.buffers())
        if buffers:  # BN running statistics are copied, not averaged
            torch._foreach_copy_(buffers, list(self.g.buffers()))

    def serving_generator(self) -> nn.Module:
        """The weights that get evaluated and exported: the EMA when there is one."""
        return self.ema if self.ema is not None else self.g

    # -- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "total_steps": self.total_steps,
            "train_seconds": self.train_seconds,
            "config": self.cfg.to_dict(),
            "g": self.g.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_tensor(), "python": _python_rng_list()},
        }
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.d is not None:
            assert self.opt_d is not None and self.sched_d is not None
            state.update(d=self.d.state_dict(), opt_d=self.opt_d.state_dict(), sched_d=self.sched_d.state_dict())
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        self.g.load_state_dict(state["g"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.scaler.load_state_dict(state["scaler"])
        if self.d is not None:
            assert self.opt_d is not None and self.sched_d is not None
            self.d.load_state_dict(state["d"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        if self.ema is not None:  # a run that adds an EMA on resume starts it from the resumed weights
            self.ema.load_state_dict(state.get("ema", state["g"]))
        self.step, self.total_steps = int(state["step"]), int(state["total_steps"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(("MT19937", rng["numpy"][:-1].numpy().astype(np.uint32), int(rng["numpy"][-1]), 0, 0.0))
        random.setstate((3, tuple(int(x) for x in rng["python"]), None))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path | None:
        if not self.is_main:
            return None
        d = self.checkpoint_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"step_{self.step:08d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        for old in sorted(d.glob("step_*.pt"))[: -max(1, self.cfg.keep_checkpoints)]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoint_dir().glob("step_*.pt"))
        return found[-1] if found else None

    def resume(self, path: Path | None = None) -> bool:
        path = path or self.latest_checkpoint()
        if path is None:
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.load_state_dict(state)
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # -- evaluation and export ----------------------------------------------------------------------------
    def loaded_model(self) -> LoadedModel:
        name = self.cfg.name if self.cfg.name in SPECS else self.cfg.stage
        spec = SPECS.get(name, SPECS["srresnet"])
        return LoadedModel(self.cfg.name, self.cfg.scale, copy.deepcopy(self.serving_generator()).float().eval(), spec)

    def evaluate(self, folders: list[str], max_images: int = 0) -> dict[str, dict[str, Any]]:
        from model.engine import EngineConfig, Upscaler
        from model.evaluate import card_metrics, evaluate

        up = Upscaler(
            self.loaded_model(), EngineConfig(device=str(self.device), precision="fp32", tile=0, channels_last=False)
        )
        results: dict[str, dict[str, Any]] = {}
        for folder in folders:
            # PSNR/SSIM, and what PSNR hides: detail, the dot grid (vs HR's), the colour shift
            results[Path(folder).name] = card_metrics(evaluate(up, folder, max_images=max_images))
        return results

    def export(self, data_summary: dict[str, Any]) -> Path:
        arch, params = generator_arch(self.cfg)
        metrics: dict[str, Any] = {
            "eval": "srgan eval: MATLAB bicubic LR, PSNR/SSIM on Y (BT.601), border = scale, fp32"
        }
        if self.cfg.bench:
            metrics.update(self.evaluate(self.cfg.bench))
        recipe = {
            k: v
            for k, v in self.cfg.to_dict().items()
            if k not in ("data", "val", "bench", "out", "progress", "workers")
        }
        recipe.update(
            steps_done=self.step,
            wall_seconds=round(self.train_seconds, 1),
            device=_device_name(self.device),
            world_size=self.world,
            amp=self.amp,
            ema_exported=self.ema is not None,
        )
        notes = []
        if self.init_source:
            recipe["init"] = self.init_source
            if self.init_recipe:  # provenance of the starting weights, so the card tells the whole history
                recipe["init_recipe"] = self.init_recipe
        if self.cfg.stage == "srgan":
            assert self.vgg_source is not None
            recipe["vgg"] = self.vgg_source.description
            notes.append(f"Content loss network: {self.vgg_source.description}.")
        card = ModelCard(
            name=self.cfg.name,
            arch=arch,
            scale=self.cfg.scale,
            arch_params=params,
            recipe=recipe,
            data=data_summary,
            metrics=metrics,
            notes=" ".join(notes),
        )
        path = self.out / f"{self.cfg.name}_x{self.cfg.scale}.safetensors"
        save_weights(self.serving_generator(), path, card)
        return path


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _numpy_rng_tensor() -> torch.Tensor:
    _, keys, pos, *_ = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    return torch.tensor(list(keys.astype(np.int64)) + [pos], dtype=torch.int64)


def _python_rng_list() -> torch.Tensor:
    version, internal, _ = random.getstate()
    return torch.tensor(list(internal), dtype=torch.int64)
