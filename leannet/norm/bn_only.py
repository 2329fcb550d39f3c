"""Training BatchNorm and only BatchNorm (Frankle, Schwab, Morcos, ICLR 2021).

``freeze(model, mode)`` leaves only some parameters trainable; norm layers keep updating their
running statistics (freezing is ``requires_grad``, not ``eval()``). Modes (``FREEZE_MODES``):

- ``none``: leave the model as it is;
- ``bn_only``: only the parameters of norm layers (BN γ and β; all parameters of RBN layers);
- ``bn_and_output``: those and the output layer;
- ``output_only``: only the output layer (a same-budget baseline);
- ``random_per_channel``: as many scalar weights as the norm layers have parameters, drawn at random
  from the convolution / linear weights other than the output layer, spread evenly over their
  output channels (two per channel in a BN ResNet, where every conv feeds one BN): the paper's
  "two random parameters per channel" baseline.

The randomly chosen entries are made trainable with a weight parametrization: the weight tensor
itself is frozen and the chosen entries are read from a separate trainable vector. So the optimizer
never sees a frozen entry (weight decay and momentum cannot move it), and counting parameters with
``requires_grad`` gives the effective trainable count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from leannet.errors import LeannetError
from leannet.norm.rbn import RepresentativeBatchNorm2d
from leannet.registry import Registry
from leannet.stages import register_transform

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, RepresentativeBatchNorm2d)
"""Layers whose parameters count as "BatchNorm parameters"."""

Head = Callable[[], nn.Module]
FreezeMode = Callable[[nn.Module, Head, torch.Generator], list[nn.Parameter] | None]
"""``(model, output_layer, generator) -> parameters to train`` (None: leave the model as it is);
``output_layer()`` finds the output layer when a mode needs it."""
FREEZE_MODES: Registry[FreezeMode] = Registry("freeze mode")
WEIGHT_INITS: Registry[Callable[[nn.Module], None]] = Registry("weight init")
BN_INITS: Registry[Callable[[nn.Module], None]] = Registry("bn init")


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm-type layer of ``model`` (``NORM_TYPES``), in module order."""
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for layer in norm_layers(model) for p in layer.parameters(recurse=False)]


def output_layer(model: nn.Module, path: str | None = None) -> nn.Module:
    """The classifier: the module at ``path``, else timm's ``get_classifier()``, else the last ``nn.Linear``."""
    if path:
        try:
            return model.get_submodule(path)
        except AttributeError:
            raise LeannetError(f"model has no submodule '{path}' to use as the output layer") from None
    if callable(getattr(model, "get_classifier", None)):
        head = model.get_classifier()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise LeannetError(f"{type(model).__name__} has no nn.Linear output layer; name it with freeze.output=PATH")
    return linears[-1]


def _frozen_weight_layers(model: nn.Module, output: nn.Module) -> list[nn.Module]:
    heads = set(output.modules())
    return [
        m for m in model.modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and m not in heads
        and not parametrize.is_parametrized(m, "weight")
    ]


class SparseTrainable(nn.Module):
    """Weight parametrization: entries at flat indices ``index`` come from the trainable ``values``.

    The original weight is frozen; ``values`` starts as its entries at ``index``.
    """

    def __init__(self, weight: Tensor, index: Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.values = nn.Parameter(weight.detach().reshape(-1)[index].clone())

    def forward(self, weight: Tensor) -> Tensor:
        return weight.reshape(-1).index_copy(0, self.index, self.values).view(weight.shape)


def random_channel_masks(weights: list[Tensor], count: int, generator: torch.Generator) -> list[Tensor]:
    """Boolean masks choosing ``count`` entries over ``weights``, evenly per output channel (dim 0).

    Each output channel gets ``count // channels`` random entries (all of them if it has fewer); the
    rest are drawn uniformly among the entries not yet chosen.
    """
    total_channels = sum(w.shape[0] for w in weights)
    total = sum(w.numel() for w in weights)
    if count > total:
        raise LeannetError(f"cannot choose {count} random parameters among {total} weights")
    share = count // max(1, total_channels)
    scores = [torch.rand(w.shape[0], w[0].numel(), generator=generator) for w in weights]
    masks = [s.argsort(dim=1).argsort(dim=1) < share for s in scores]
    left = count - sum(int(m.sum()) for m in masks)
    if left > 0:
        extra = torch.cat([torch.rand(m.numel(), generator=generator).masked_fill(m.reshape(-1), 2.0) for m in masks])
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[extra.topk(left, largest=False).indices] = True
        masks = [m | c.view_as(m) for m, c in zip(masks, chosen.split([m.numel() for m in masks]), strict=True)]
    return [m.view(w.shape) for m, w in zip(masks, weights, strict=True)]


@FREEZE_MODES.register("none")
def _none(model: nn.Module, output: Head, generator: torch.Generator) -> None:
    return None


@FREEZE_MODES.register("bn_only")
def _bn_only(model: nn.Module, output: Head, generator: torch.Generator) -> list[nn.Parameter]:
    return norm_parameters(model)


@FREEZE_MODES.register("bn_and_output")
def _bn_and_output(model: nn.Module, output: Head, generator: torch.Generator) -> list[nn.Parameter]:
    return [*norm_parameters(model), *output().parameters()]


@FREEZE_MODES.register("output_only")
def _output_only(model: nn.Module, output: Head, generator: torch.Generator) -> list[nn.Parameter]:
    return list(output().parameters())


@FREEZE_MODES.register("random_per_channel")
def _random_per_channel(model: nn.Module, output: Head, generator: torch.Generator) -> list[nn.Parameter]:
    count = sum(p.numel() for p in norm_parameters(model))
    layers = _frozen_weight_layers(model, output())
    if not layers:
        raise LeannetError("random_per_channel needs convolution or linear layers besides the output layer")
    masks = random_channel_masks([m.weight for m in layers], count, generator)
    trainable = []
    for layer, mask in zip(layers, masks, strict=True):
        index = mask.reshape(-1).nonzero().squeeze(1).to(layer.weight.device)
        if index.numel() == 0:
            continue
        chooser = SparseTrainable(layer.weight, index)
        parametrize.register_parametrization(layer, "weight", chooser)
        trainable.append(chooser.values)
    return trainable


def freeze(model: nn.Module, mode: str, *, output: str | None = None, seed: int = 0) -> nn.Module:
    """Leave only the parameters selected by ``mode`` trainable (``requires_grad``); returns ``model``.

    ``mode`` is one of ``FREEZE_MODES`` (see the module docstring); ``output`` names the output
    layer's module path when it is not the last ``nn.Linear`` (or timm's classifier); ``seed`` draws
    the entries of ``random_per_channel``. Running statistics keep updating in train mode.
    """
    select = FREEZE_MODES.get(mode)
    trainable = select(model, lambda: output_layer(model, output), torch.Generator().manual_seed(seed))
    if trainable is None:
        return model
    if not any(p.numel() for p in trainable):
        raise LeannetError(
            f"freeze.mode={mode} leaves no trainable parameter in {type(model).__name__} (it has no BatchNorm "
            "layer with γ, β); pick a model with BatchNorm or another freeze.mode"
        )
    keep = {id(p) for p in trainable}
    for param in model.parameters():
        param.requires_grad_(id(param) in keep)
    return model


@WEIGHT_INITS.register("model")
def _model_weights(model: nn.Module) -> None:
    """Keep the model's own initialization."""


@WEIGHT_INITS.register("kaiming_fan_in")
def kaiming_fan_in(model: nn.Module) -> None:
    """Kaiming normal (fan_in, gain √2) for every convolution and linear weight, as in open_lth."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


@BN_INITS.register("model")
def _model_norms(model: nn.Module) -> None:
    """Keep the norm layers' own initialization (γ=1, β=0)."""


@BN_INITS.register("uniform")
def gamma_uniform(model: nn.Module) -> None:
    """γ ~ U[0, 1), β = 0: open_lth's default for BN-only training."""
    for layer in norm_layers(model):
        if layer.weight is not None:
            nn.init.uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


@BN_INITS.register("ones")
def gamma_ones(model: nn.Module) -> None:
    """γ = 1, β = 0."""
    for layer in norm_layers(model):
        if layer.weight is not None:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def apply_freeze_config(model: nn.Module, cfg, seed: int) -> nn.Module:  # noqa: ANN001  (FreezeConfig)
    """The recipe's ``freeze:`` section: re-initialize (``weight_init``, ``bn_init``), then :func:`freeze`."""
    init_weights, init_norms = WEIGHT_INITS.get(cfg.weight_init), BN_INITS.get(cfg.bn_init)
    FREEZE_MODES.get(cfg.mode)
    with torch.no_grad():
        init_weights(model)
        init_norms(model)
    return freeze(model, cfg.mode, output=cfg.output, seed=seed if cfg.seed is None else cfg.seed)


@register_transform("freeze")
def _freeze_section(model: nn.Module, config) -> nn.Module:  # noqa: ANN001  (the recipe)
    """The recipe's ``freeze:`` section as a model transform (a no-op for ``mode: none`` with model inits)."""
    return apply_freeze_config(model, config.freeze, config.seed)
