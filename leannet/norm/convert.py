"""``convert_norm``: put Representative BatchNorm into any model (leannet, torchvision, timm), and back."""

from __future__ import annotations

import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.models.norms import NORMS, replace_modules, swap_batchnorm
from leannet.norm.rbn import RepresentativeBatchNorm2d, SyncRepresentativeBatchNorm2d

RBN_CLASSES: dict[str, type[RepresentativeBatchNorm2d]] = {
    "rbn": RepresentativeBatchNorm2d,
    "rbn_sync": SyncRepresentativeBatchNorm2d,
}


def _retype(layer: RepresentativeBatchNorm2d, cls: type[RepresentativeBatchNorm2d]) -> RepresentativeBatchNorm2d:
    ref = layer.center_weight
    new = cls(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats,
              device=ref.device, dtype=ref.dtype)
    new.load_state_dict(layer.state_dict())
    for (_, old), (_, param) in zip(layer.named_parameters(), new.named_parameters(), strict=True):
        param.requires_grad_(old.requires_grad)
    return new.train(layer.training)


def fold_to_batchnorm(layer: RepresentativeBatchNorm2d, strict: bool = True) -> nn.BatchNorm2d:
    """An ``nn.BatchNorm2d`` computing the same function as ``layer`` where that is possible.

    With w_m = w_v = 0 an RBN is BN with γ' = γ·sigmoid(w_b) (exact; the running statistics carry
    over). Otherwise the calibration depends on each instance's mean and no BN can express it:
    ``strict`` raises, ``strict=False`` drops w_m and w_v (an approximation).
    """
    calibrated = bool(layer.center_weight.detach().any() or layer.scale_weight.detach().any())
    if calibrated and strict:
        raise LeannetError(
            "cannot convert an RBN layer with non-zero center_weight/scale_weight to BatchNorm exactly; "
            "pass strict=False to drop the calibration (approximate)"
        )
    ref = layer.center_weight
    bn = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, affine=True,
                        track_running_stats=layer.track_running_stats, device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        gate = torch.sigmoid(layer.scale_bias)
        bn.weight.copy_(gate * layer.weight if layer.affine else gate)
        bn.bias.copy_(layer.bias if layer.affine else torch.zeros_like(gate))
        if layer.track_running_stats:
            bn.running_mean.copy_(layer.running_mean)
            bn.running_var.copy_(layer.running_var)
            bn.num_batches_tracked.copy_(layer.num_batches_tracked)
    if layer.affine:
        bn.weight.requires_grad_(layer.weight.requires_grad)
        bn.bias.requires_grad_(layer.bias.requires_grad)
    return bn.train(layer.training)


def convert_norm(model: nn.Module, norm: str, strict: bool = True, keep_output: bool = False) -> nn.Module:
    """Convert the normalization layers of any model (in place) and return it.

    ``"rbn"`` / ``"rbn_sync"``: every ``nn.BatchNorm2d`` (timm's ``BatchNormAct2d`` included) becomes a
    :class:`~leannet.norm.RepresentativeBatchNorm2d` (or its synchronized variant) with the BN's eps,
    momentum, γ, β and running statistics, and the calibration at its initial values (w_b = 1, so
    each converted layer outputs sigmoid(1) ≈ 0.73 × what the BN did; in eval mode with copied running
    statistics this shrinkage compounds over depth). ``keep_output=True`` divides γ by sigmoid(w_b)
    instead, so the converted model computes exactly what the BN model did: use it to fine-tune a
    pretrained model. RBN layers switch between the plain and synchronized classes keeping every
    parameter.
    ``"bn"``: RBN layers become ``nn.BatchNorm2d`` via :func:`fold_to_batchnorm` (exact when
    w_m = w_v = 0, else an error unless ``strict=False``). Any other registered norm: RBN layers are
    folded to BN first, then every BN is swapped with :func:`~leannet.models.swap_batchnorm`.
    """
    NORMS.get(norm)  # unknown names: one-line error listing the valid ones
    if norm in RBN_CLASSES:
        cls = RBN_CLASSES[norm]
        model = replace_modules(
            model, lambda m: isinstance(m, RepresentativeBatchNorm2d) and type(m) is not cls,
            lambda m: _retype(m, cls),
        )
        if not any(isinstance(m, nn.BatchNorm2d | RepresentativeBatchNorm2d) for m in model.modules()):
            raise LeannetError(f"{type(model).__name__} has no BatchNorm2d layer to convert to {norm} "
                               "(RBN replaces BatchNorm only, not LayerNorm or GroupNorm)")
        return swap_batchnorm(model, norm, keep_output=keep_output)
    model = replace_modules(
        model, lambda m: isinstance(m, RepresentativeBatchNorm2d), lambda m: fold_to_batchnorm(m, strict)
    )
    return model if norm == "bn" else swap_batchnorm(model, norm)
