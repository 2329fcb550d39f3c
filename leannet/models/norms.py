"""Normalization layers for 2-D feature maps, chosen by name.

Models build every norm layer through :func:`make_norm`, so registering a new norm in ``NORMS``
(e.g. Representative BatchNorm) makes it available to every leannet model without editing them,
and :func:`swap_batchnorm` puts it into any other model (torchvision, timm, your own).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.registry import Registry

NormFactory = Callable[..., nn.Module]
"""``(num_features, *, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True) -> nn.Module``.

A factory may leave out the keyword arguments it has no use for; :func:`swap_batchnorm` only passes
those it accepts.
"""

NORMS: Registry[NormFactory] = Registry("norm")

# Children a BatchNorm2d subclass may carry after the normalization (timm's BatchNormAct2d).
_TRAILING_CHILDREN = ("drop", "act")


@NORMS.register("bn")
def batch_norm(
    num_features: int,
    *,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """Standard BatchNorm (Ioffe & Szegedy 2015): ``nn.BatchNorm2d``."""
    return nn.BatchNorm2d(
        num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )


@NORMS.register("none")
def no_norm(num_features: int, **_: Any) -> nn.Module:
    """No normalization: ``nn.Identity`` (the model keeps its layout, minus the norm parameters)."""
    return nn.Identity()


def make_norm(norm: str, num_features: int, **kwargs: Any) -> nn.Module:
    """Build the norm layer registered as ``norm`` for ``num_features`` channels."""
    return NORMS.get(norm)(num_features, **kwargs)


def _accepted_kwargs(factory: NormFactory, kwargs: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params}
    return {k: v for k, v in kwargs.items() if k in names}


def _convert(bn: nn.BatchNorm2d, factory: NormFactory) -> nn.Module:
    extra = dict(bn.named_children())
    if set(extra) - set(_TRAILING_CHILDREN):
        raise LeannetError(
            f"cannot swap {type(bn).__name__}: it has submodules {sorted(extra)} that swap_batchnorm "
            f"does not know how to keep; replace it by hand"
        )
    options = dict(
        eps=bn.eps, momentum=bn.momentum, affine=bn.affine, track_running_stats=bn.track_running_stats
    )
    new = factory(bn.num_features, **_accepted_kwargs(factory, options))
    ref = next((t for t in [*bn.parameters(), *bn.buffers()] if t.is_floating_point()), None)
    if ref is not None:
        new.to(device=ref.device, dtype=ref.dtype)
    new.train(bn.training)

    source = dict(bn.named_parameters(recurse=False)) | dict(bn.named_buffers(recurse=False))
    with torch.no_grad():
        for name, tensor in [*new.named_parameters(), *new.named_buffers()]:
            old = source.get(name)
            if old is not None and old.shape == tensor.shape:
                tensor.copy_(old)
                if isinstance(tensor, nn.Parameter):
                    tensor.requires_grad_(old.requires_grad)
    trailing = [extra[k] for k in _TRAILING_CHILDREN if k in extra]
    return nn.Sequential(new, *trailing) if trailing else new


def swap_batchnorm(model: nn.Module, norm: str, keep_output: bool = False) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``model`` (in place) by the norm registered as ``norm``.

    Works on any model (leannet, torchvision, timm). The new layer gets the old one's eps, momentum,
    affine and track_running_stats (where its factory accepts them), its device, dtype and train/eval
    mode, and a copy of every parameter or buffer (weight, bias, running_mean, running_var,
    num_batches_tracked, ...) it has under the same name and shape. Layers that already are of the
    target type are left alone. timm's ``BatchNormAct2d`` becomes ``Sequential(norm, drop, act)``.
    ``keep_output=True`` then calls each new layer's ``match_batchnorm_output_()``, where it has one, so
    the converted model computes what it did (e.g. for a pretrained model; RBN rescales γ).
    Returns ``model`` (or the new layer if ``model`` itself is a BatchNorm2d).
    """
    factory = NORMS.get(norm)
    target = type(factory(1))
    before = {id(m) for m in model.modules()}
    model = replace_modules(
        model, lambda m: isinstance(m, nn.BatchNorm2d) and type(m) is not target, lambda bn: _convert(bn, factory)
    )
    if keep_output:
        for m in model.modules():
            if id(m) not in before and hasattr(m, "match_batchnorm_output_"):
                m.match_batchnorm_output_()
    return model


def replace_modules(
    model: nn.Module, predicate: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """Replace (in place) every submodule matching ``predicate`` by ``make(submodule)``.

    A layer shared by several parents is converted once. Returns ``model``, or its replacement when
    ``model`` itself matches.
    """
    converted: dict[nn.Module, nn.Module] = {}

    def visit(module: nn.Module) -> None:
        for name, child in module.named_children():
            if predicate(child):
                if child not in converted:
                    converted[child] = make(child)
                setattr(module, name, converted[child])
            else:
                visit(child)

    if predicate(model):
        return make(model)
    visit(model)
    return model
