"""Multiply-accumulates of a forward pass: the one counter used by every area (BYOT exits, KE slim networks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, x: Tensor | Sequence[int]) -> int:
    """Multiply-accumulates of one forward of `model` (in eval mode) on `x`, a batch or one input's shape.

    Counted by torch's FlopCounterMode (FLOPs / 2): convolutions and matrix products; norms,
    activations, pooling and additions are not counted (they are < 1 % for ResNets).
    """
    if not isinstance(x, Tensor):
        param = next(model.parameters())
        x = torch.zeros(1, *x, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
