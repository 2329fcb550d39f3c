"""Optimizers and learning-rate schedules, built from the `optim:` and `schedule:` recipe sections.

Every schedule steps once per optimizer step (so warm-up is smooth); epochs in the config are
converted to steps here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from leannet.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., LRScheduler]] = Registry("schedule")


def param_groups(module: nn.Module, weight_decay: float, decay_norm_and_bias: bool,
                 exclude: Iterable[nn.Parameter] = ()) -> list[dict]:
    """Trainable parameters in two groups: weights with decay, and (optionally) 1-D tensors without.

    1-D tensors are the biases and every per-channel parameter of normalization layers (γ, β, and the
    calibration weights of RBN), which weight decay should usually leave alone.
    """
    skip = {id(p) for p in exclude}
    params = [p for p in module.parameters() if p.requires_grad and id(p) not in skip]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@OPTIMIZERS.register("sgd")
def sgd(groups: Iterable[dict], cfg: DictConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adamw")
def adamw(groups: Iterable[dict], cfg: DictConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def build_optimizer(module: nn.Module, cfg: DictConfig, exclude: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """The recipe's optimizer over `module`'s trainable parameters except `exclude`."""
    groups = param_groups(module, cfg.weight_decay, cfg.decay_norm_and_bias, exclude)
    return OPTIMIZERS.get(cfg.name)(groups, cfg)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 1/warmup_steps to 1 over the first `warmup_steps` steps."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@SCHEDULES.register("constant")
def constant(opt: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return LambdaLR(opt, lambda step: warmup_factor(step, warmup))


@SCHEDULES.register("multistep")
def multistep(opt: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    """lr · γ^(number of milestones passed), milestones given in epochs."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    marks = sorted(round(m * steps_per_epoch) for m in cfg.milestones)
    gamma = cfg.gamma

    def factor(step: int) -> float:
        return warmup_factor(step, warmup) * gamma ** sum(step >= m for m in marks)

    return LambdaLR(opt, factor)


@SCHEDULES.register("cosine")
def cosine(opt: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    """Linear warm-up, then half a cosine from lr down to min_lr at the last step."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch - warmup)
    base = opt.param_groups[0]["lr"]
    floor = cfg.min_lr / base if base > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_factor(step, warmup)
        progress = min(1.0, (step - warmup) / total)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(opt, factor)


@SCHEDULES.register("onecycle")
def onecycle(opt: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    """Smith's one-cycle policy (torch's OneCycleLR) peaking at the configured lr."""
    peak = [group["lr"] for group in opt.param_groups]
    return OneCycleLR(opt, max_lr=peak, total_steps=max(1, epochs * steps_per_epoch), pct_start=cfg.pct_start)


def build_schedule(
    opt: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    return SCHEDULES.get(cfg.name)(opt, cfg, steps_per_epoch, epochs)
