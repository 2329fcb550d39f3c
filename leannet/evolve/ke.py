"""Knowledge Evolution (Taha, Shrivastava, Davis, CVPR 2021): split masks and re-initialisation.

Every convolution and linear weight (and bias) is split once, before generation 1, into a *fit
hypothesis* H_fit (mask True, kept across generations) and a *reset hypothesis* H_reset (mask False,
re-drawn at the start of every later generation). Normalization layers are never split nor reset.

* WELS (weight level, §3.1): each weight is in H_fit with probability ``rate`` (the split rate sr).
* KELS (kernel level, §3.2): for a conv weight [C_out, C_in, k, k] the fit part is the top-left
  block ``[:⌈sr·C_out⌉, :⌈sr·C_in⌉]``; a linear weight likewise. The first layer keeps all its input
  channels (the image), the last linear layer keeps all its outputs (the classes). A bias follows
  its layer's outputs. "First" and "last" are the first and last conv/linear in module registration
  order (true for leannet, torchvision and timm classifiers; documented rule).

Masks live on the model as boolean buffers ``<module>.ke_mask_<param>`` (:func:`attach_masks`), so
Lightning checkpoints carry them and every generation uses the same split.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from leannet.errors import LeannetError

SPLITS = ("kels", "wels")
REINITS = ("kaiming_uniform", "kaiming_normal")
MASK_PREFIX = "ke_mask_"


def split_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs KE splits: every ``nn.Conv1d/2d/3d`` and ``nn.Linear``, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def kels_size(channels: int, rate: float) -> int:
    """⌈sr·C⌉: the number of channels KELS keeps in the fit hypothesis (the slim network's width)."""
    return max(1, math.ceil(rate * channels - 1e-9))


def _check(mode: str, rate: float) -> None:
    if mode not in SPLITS:
        raise LeannetError(f"unknown KE split '{mode}'; valid splits: {', '.join(SPLITS)}")
    if not 0.0 < rate <= 1.0:
        raise LeannetError(f"KE split rate must be in (0, 1], got {rate}; the paper uses 0.5")


def split_masks(
    model: nn.Module, mode: str = "kels", rate: float = 0.5, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Split masks {parameter name: bool mask of its shape, True = fit hypothesis} (paper §3.1-3.2).

    ``mode`` is ``kels`` (kernel level: top-left blocks, conv-aware) or ``wels`` (weight level:
    Bernoulli(``rate``) per weight, drawn with ``generator``). Grouped or depthwise convolutions
    cannot be split coherently at kernel level: KELS raises a ``LeannetError`` for them.
    """
    _check(mode, rate)
    layers = split_layers(model)
    if not layers:
        raise LeannetError("KE found no nn.Conv*/nn.Linear layer to split in this model")
    masks: dict[str, Tensor] = {}
    last_linear = max((i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Linear)), default=None)
    for i, (name, module) in enumerate(layers):
        prefix = f"{name}." if name else ""
        weight = module.weight
        if mode == "wels":
            masks[prefix + "weight"] = torch.rand(weight.shape, generator=generator) < rate
            if module.bias is not None:
                masks[prefix + "bias"] = torch.rand(module.bias.shape, generator=generator) < rate
            continue
        if getattr(module, "groups", 1) != 1:
            raise LeannetError(
                f"KELS cannot split grouped/depthwise conv '{name}' (groups={module.groups}); "
                "use evolve.split=wels for this model"
            )
        c_out, c_in = weight.shape[:2]
        d_out = c_out if i == last_linear else kels_size(c_out, rate)
        d_in = c_in if i == 0 else kels_size(c_in, rate)
        mask = torch.zeros(weight.shape, dtype=torch.bool)
        mask[:d_out, :d_in] = True
        masks[prefix + "weight"] = mask
        if module.bias is not None:
            bias = torch.zeros(module.bias.shape, dtype=torch.bool)
            bias[:d_out] = True
            masks[prefix + "bias"] = bias
    return masks


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = param_name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise LeannetError(f"KE mask names parameter '{param_name}' that this model does not have") from None
    if not isinstance(getattr(module, attr, None), nn.Parameter):
        raise LeannetError(f"KE mask names parameter '{param_name}' that this model does not have")
    return module, attr


def attach_masks(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Store ``masks`` on ``model`` as boolean buffers ``ke_mask_<param>`` (saved in its state dict)."""
    for name, mask in masks.items():
        module, attr = _owner(model, name)
        param = getattr(module, attr)
        if tuple(mask.shape) != tuple(param.shape):
            raise LeannetError(
                f"KE mask for '{name}' has shape {tuple(mask.shape)}, the parameter {tuple(param.shape)}"
            )
        module.register_buffer(MASK_PREFIX + attr, mask.to(device=param.device, dtype=torch.bool))
    return model


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """The masks attached to ``model`` by :func:`attach_masks` ({} if none)."""
    masks = {}
    for name, buffer in model.named_buffers():
        module_name, _, attr = name.rpartition(".")
        if attr.startswith(MASK_PREFIX):
            masks[(f"{module_name}." if module_name else "") + attr[len(MASK_PREFIX):]] = buffer
    return masks


def fresh_init(param_name: str, module: nn.Module, shape: torch.Size, scheme: str,
               generator: torch.Generator | None = None) -> Tensor:
    """A fresh draw for a conv/linear parameter (paper §3: the reset hypothesis is re-initialised).

    ``kaiming_uniform``: PyTorch's default layer init, as in the official code (weights
    U(±√(6/((1+a²)·fan_in))) with a=√5, biases U(±1/√fan_in)); ``kaiming_normal``: leannet's
    generation-1 init (normal, fan_out, ReLU gain; biases 0).
    """
    if scheme not in REINITS:
        raise LeannetError(f"unknown KE reinit '{scheme}'; valid: {', '.join(REINITS)}")
    weight = module.weight
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    if param_name.endswith("bias"):
        if scheme == "kaiming_normal":
            return torch.zeros(shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    if scheme == "kaiming_uniform":
        bound = math.sqrt(6 / ((1 + 5) * fan_in))  # gain √(2/(1+a²)) with a = √5
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    std = math.sqrt(2 / fan_out)
    return torch.randn(shape, generator=generator) * std


@torch.no_grad()
def reinitialize(
    model: nn.Module,
    masks: dict[str, Tensor] | None = None,
    scheme: str = "kaiming_uniform",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Re-draw the reset hypothesis (mask False) of every masked parameter; H_fit is untouched.

    ``masks`` defaults to those attached to the model. Generation k+1 of KE starts from generation
    k's weights with this re-initialisation (paper Fig. 2). Returns ``model``.
    """
    masks = get_masks(model) if masks is None else masks
    if not masks:
        raise LeannetError("reinitialize needs KE masks: pass split_masks(model) or attach_masks first")
    for name, mask in masks.items():
        module, attr = _owner(model, name)
        param = getattr(module, attr)
        fresh = fresh_init(attr, module, param.shape, scheme, generator).to(param.device, param.dtype)
        param.copy_(torch.where(mask.to(param.device), param, fresh))
    return model
