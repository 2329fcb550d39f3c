"""torchvision (``tv:<name>``) and timm (``timm:<name>``) models: randomly initialized, or pretrained weights
from a local file (``model.args.weights`` / ``model.args.pretrained``, see ``leannet.models.pretrained``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.models.norms import swap_batchnorm
from leannet.models.pretrained import load_matching, read_state_dict, timm_weights_file, torchvision_weights_file


def _unknown(source: str, name: str, names: list[str], how_to_list: str) -> LeannetError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}; " if close else ""
    return LeannetError(f"unknown {source} model '{name}'; {hint}list them all with {how_to_list}")


def replace_input_conv(model: nn.Module, in_channels: int, pretrained: bool = False) -> nn.Module:
    """Make the first 3-channel ``nn.Conv2d`` of ``model`` take ``in_channels`` channels (in place).

    The new convolution keeps every other hyperparameter; its weights are the old (random) ones,
    sliced for fewer channels or tiled for more, so they keep the model's own initialization.
    ``pretrained``: trained weights are summed over RGB for one channel (a grey image x gives what the RGB
    image (x, x, x) gave) and tiled × 3/``in_channels`` otherwise.
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
        tiled = conv.weight[:, torch.arange(in_channels, device=conv.weight.device) % 3]
        if pretrained:
            tiled = conv.weight.sum(1, keepdim=True) if in_channels == 1 else tiled * (3 / in_channels)
        new.weight.copy_(tiled)
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
    weights = kwargs.pop("weights", None)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if weights is not None:
        path = torchvision_weights_file(name, weights)
        load_matching(model, read_state_dict(path), path, f"tv:{name}")
    return model if in_channels == 3 else replace_input_conv(model, in_channels, pretrained=weights is not None)


def _timm(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise _unknown(
            "timm", name, timm.list_models(), '`python -c "import timm; print(timm.list_models())"`'
        )
    pretrained = kwargs.pop("pretrained", False)
    if pretrained is False or pretrained is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    path = timm_weights_file(name, pretrained)
    state = read_state_dict(path)  # weights_only; timm's loader then drops a classifier of another size
    try:  # and adapts the input conv to in_chans
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_channels,
                                 pretrained_cfg_overlay={"state_dict": state, "source": ""}, **kwargs)
    except RuntimeError as err:
        reason = " ".join(str(err).split())[:160]
        raise LeannetError(f"{path} does not hold timm:{name}'s weights ({reason}); point model.args.pretrained "
                           "to that model's file") from None


SOURCES: dict[str, Callable[..., nn.Module]] = {"tv": _torchvision, "timm": _timm}


def build_external(
    name: str, num_classes: int, in_channels: int = 3, norm: str = "bn", width: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build ``tv:<name>`` or ``timm:<name>``, pretrained only from a local file (``weights=`` for
    torchvision, ``pretrained=`` for timm; see :mod:`leannet.models.pretrained`).

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
    pretrained = kwargs.get("weights") is not None or kwargs.get("pretrained") not in (None, False)
    try:
        model = SOURCES[source](model_name, num_classes, in_channels, **kwargs)
    except TypeError as err:  # an argument the model's constructor does not take
        hint = {"tv": "model.args.weights", "timm": "model.args.pretrained"}[source]
        raise LeannetError(f"model.args of {name}: {' '.join(str(err).split())}; remove it (pretrained weights: "
                           f"{hint})") from None
    if norm == "bn":
        return model
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        norms = sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}) or ["none"]
        raise LeannetError(f"model.norm={norm} replaces BatchNorm2d layers, but {name} has none "
                           f"(its norm layers: {', '.join(norms)}); drop model.norm or pick a model with BatchNorm")
    return swap_batchnorm(model, norm, keep_output=pretrained)  # docs/norm.md: pretrained keeps its output
