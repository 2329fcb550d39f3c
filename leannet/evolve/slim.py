"""The slim network of Knowledge Evolution (Taha et al. 2021, §3.2 "KELS ... slim network"), and MACs.

With KELS masks the fit hypothesis of every layer is a top-left block, so it *is* a narrower network of
the same architecture: every width ⌈sr·C⌉, conv W[:d_out, :d_in], linear W[:, :d_in], norm layers the
first d channels. Residual additions stay coherent because every layer keeps its *first* channels.
No fine-tuning: the slim network is read off the dense one (paper: 3.632 → 0.968 GOps for ResNet-18).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.evolve.ke import MASK_PREFIX, get_masks, split_layers
from leannet.models.macs import count_macs  # noqa: F401  (re-exported)


def block_size(name: str, mask: Tensor) -> tuple[int, int]:
    """(d_out, d_in) of a KELS mask, which must be exactly a top-left block; else a LeannetError."""
    rows = mask.flatten(2).any(dim=2) if mask.ndim > 2 else mask
    d_out = int(rows.any(dim=1).sum())
    d_in = int(rows.any(dim=0).sum())
    expected = torch.zeros_like(mask)
    expected[:d_out, :d_in] = True
    if d_out == 0 or d_in == 0 or not torch.equal(mask.cpu(), expected.cpu()):
        raise LeannetError(
            f"mask of '{name}' is not a top-left block: slim() needs KELS masks (evolve.split=kels), not WELS"
        )
    return d_out, d_in


def _shrink_layer(module: nn.Module, d_out: int, d_in: int) -> None:
    with torch.no_grad():
        module.weight = nn.Parameter(module.weight[:d_out, :d_in].clone(), module.weight.requires_grad)
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias[:d_out].clone(), module.bias.requires_grad)
    if isinstance(module, nn.Linear):
        module.in_features, module.out_features = d_in, d_out
    else:
        module.in_channels, module.out_channels = d_in, d_out


def _shrink_norm(name: str, module: nn.Module, channels: int, keep: int) -> None:
    for attr, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        if tensor.ndim == 0:
            continue
        if tensor.shape[0] != channels:
            raise LeannetError(f"slim cannot shrink '{name}.{attr}' of shape {tuple(tensor.shape)}")
        small = tensor.detach()[:keep].clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, attr, nn.Parameter(small, tensor.requires_grad))
        else:
            module._buffers[attr] = small
    module.num_features = keep


def slim(model: nn.Module, masks: dict[str, Tensor] | None = None) -> nn.Module:
    """The slim network (KELS fit hypothesis) as a new, smaller model of the same classes.

    ``masks`` defaults to those attached to ``model``. Every conv/linear becomes its top-left
    block, every norm layer (anything with ``num_features``: BatchNorm, RBN, …) its first channels,
    KE mask buffers are dropped. The result is a plain ``nn.Module`` (same class as ``model``),
    trainable and savable like any other; for a leannet ResNet of width w it has the state-dict
    layout of ``build_model(name, width=sr·w)`` when the widths agree (e.g. resnet20 at sr 0.5).
    On a dense network whose reset part is zero, its outputs equal the dense outputs.
    """
    masks = get_masks(model) if masks is None else masks
    if not masks:
        raise LeannetError("slim needs KELS masks: pass leannet.evolve.split_masks(model, 'kels')")
    small = copy.deepcopy(model)
    channel_map: dict[int, set[int]] = {}
    layers = split_layers(small)
    for i, (name, module) in enumerate(layers):
        key = f"{name}.weight" if name else "weight"
        if key not in masks:
            raise LeannetError(f"no KE mask for '{key}'; build the masks with split_masks on this model")
        d_out, d_in = block_size(key, masks[key])
        if getattr(module, "groups", 1) != 1:
            raise LeannetError(f"slim cannot shrink grouped/depthwise conv '{name}' (groups={module.groups})")
        if i < len(layers) - 1:
            channel_map.setdefault(module.weight.shape[0], set()).add(d_out)
        _shrink_layer(module, d_out, d_in)
    split = {m for _, m in layers}
    for name, module in small.named_modules():
        for attr in [b for b in module._buffers if b.startswith(MASK_PREFIX)]:
            del module._buffers[attr]
        if module in split:
            continue
        own = [*module.parameters(recurse=False), *(b for b in module.buffers(recurse=False) if b.ndim)]
        if not own:
            continue
        channels = getattr(module, "num_features", None)
        keeps = channel_map.get(channels, set())
        if channels is None or len(keeps) != 1:
            raise LeannetError(
                f"slim cannot shrink module '{name}' ({type(module).__name__}): only conv, linear and "
                "norm layers (with num_features) that follow a split layer are supported"
            )
        _shrink_norm(name, module, channels, next(iter(keeps)))
    return small
