"""torchvision (``tv:<name>``) and timm (``timm:<name>``) models, always randomly initialized."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.models.norms import swap_batchnorm


def _unknown(source: str, name: str, names: list[str], how_to_list: str) -> LeannetError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}; " if close else ""
    return LeannetError(f"unknown {source} model '{name}'; {hint}list them all with {how_to_list}")


def replace_input_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Make the first 3-channel ``nn.Conv2d`` of ``model`` take ``in_channels`` channels (in place).

    The new convolution keeps every other hyperparameter; its weights are the old (random) ones,
    sliced for fewer channels or tiled for more, so they keep the model's own initialization.
    """
    path, conv = next(
        ((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3),
        ("", None),
    )
    if conv is None:
        raise LeannetError(
            f"{type(model).__name__} has no 3-channel input conv to adapt to {in_channels} channels"
        )
    if conv.groups != 1:
        raise LeannetError(f"cannot change the input channels of grouped conv '{path}'")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, torch.arange(in_channels, device=conv.weight.device) % 3])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    if not path:  # the model is the conv itself
        return new
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, new)
    return model


def _torchvision(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise _unknown(
            "torchvision",
            name,
            names,
            '`python -c "import torchvision; '
            'print(torchvision.models.list_models(module=torchvision.models))"`',
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return model if in_channels == 3 else replace_input_conv(model, in_channels)


def _timm(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise _unknown(
            "timm", name, timm.list_models(), '`python -c "import timm; print(timm.list_models())"`'
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


SOURCES: dict[str, Callable[..., nn.Module]] = {"tv": _torchvision, "timm": _timm}


def build_external(
    name: str, num_classes: int, in_channels: int = 3, norm: str = "bn", width: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build ``tv:<name>`` or ``timm:<name>`` without pretrained weights.

    ``norm="bn"`` keeps the model's own norm layers; any other registered norm replaces its
    BatchNorm2d layers via :func:`swap_batchnorm`. ``width`` must stay 1 (pick a wider variant
    instead); ``kwargs`` go to ``torchvision.models.get_model`` / ``timm.create_model``.
    """
    source, _, model_name = name.partition(":")
    if source not in SOURCES:
        raise LeannetError(
            f"unknown model source '{source}' in '{name}'; use {' or '.join(f'{s}:' for s in SOURCES)}"
        )
    if width != 1.0:
        raise LeannetError(f"width is only for leannet models; for '{name}' pick a wider variant instead")
    model = SOURCES[source](model_name, num_classes, in_channels, **kwargs)
    if norm == "bn":
        return model
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        norms = sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}) or ["none"]
        raise LeannetError(f"model.norm={norm} replaces BatchNorm2d layers, but {name} has none "
                           f"(its norm layers: {', '.join(norms)}); drop model.norm or pick a model with BatchNorm")
    return swap_batchnorm(model, norm)
