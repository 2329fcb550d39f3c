"""Re-estimate BatchNorm running statistics of a trained model on data, changing no weight.

A checkpoint's running statistics describe the activations of the network that was being trained
when they were accumulated (an exponential average, momentum 0.1). For an early checkpoint (De-KD's
epoch-1 teacher, Yuan et al. 2020 §3.2) or a network whose weights changed afterwards (KE's slim
network), they no longer match, and eval mode is confidently wrong. Re-estimation replaces them with
the exact average over the given batches: momentum None makes PyTorch keep a cumulative mean
μ_n = μ_{n−1} + (x̄_n − μ_{n−1}) / n of each batch's statistics (Ioffe & Szegedy 2015, Alg. 2, step 10).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def running_stat_layers(model: nn.Module) -> list[nn.Module]:
    """Every layer that keeps running statistics (BatchNorm1d/2d/3d, SyncBatchNorm, RBN)."""
    return [m for m in model.modules()
            if getattr(m, "track_running_stats", False) and getattr(m, "running_mean", None) is not None]


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable[Tensor], max_batches: int | None = None) -> int:
    """Reset and re-estimate every norm layer's running statistics over `batches` (inputs only).

    Runs the model in train mode under `no_grad` (weights untouched, autograd off) and leaves it in the
    mode it was in, each layer's momentum restored. Returns the number of batches used; with no layer
    or no batch the model is unchanged and 0 is returned.
    """
    layers = running_stat_layers(model)
    if not layers:
        return 0
    saved = {id(m): {k: v.clone() for k, v in m.state_dict().items()} for m in layers}
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for x in batches:
            if max_batches is not None and used >= max_batches:
                break
            model(x)
            used += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
            if used == 0:
                m.load_state_dict(saved[id(m)])
        model.train(was_training)
    return used
