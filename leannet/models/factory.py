"""The model registry and ``build_model``, the one entry point that turns a name into a model."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from leannet.errors import LeannetError
from leannet.models.external import build_external
from leannet.models.norms import NORMS
from leannet.registry import Registry

ModelFactory = Callable[..., nn.Module]
"""``(*, num_classes, in_channels, norm, width, [image_size], **extras) -> nn.Module``.

``image_size`` is passed only to factories that declare it (models whose layer sizes depend on it).
"""

MODELS: Registry[ModelFactory] = Registry("model")

# (pattern, description, resolver): names such as "resnet866" that are built without being listed.
_PATTERNS: list[tuple[re.Pattern[str], str, Callable[[re.Match[str]], ModelFactory]]] = []


def register_model(name: str | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name`` (default: the function's name).

    A factory takes the keyword arguments ``num_classes, in_channels, norm, width`` (and
    ``image_size`` if its layer sizes depend on it) and builds every norm layer with ``make_norm``.
    """
    return MODELS.register(name)


def register_model_pattern(
    pattern: str, description: str
) -> Callable[[Callable[[re.Match[str]], ModelFactory]], Callable[[re.Match[str]], ModelFactory]]:
    """Decorator registering a resolver for unlisted names fully matching ``pattern``.

    The resolver receives the match and returns a model factory; ``description`` (e.g.
    ``"resnetD (D = 6n+2)"``) is shown in the unknown-name error.
    """

    def add(resolver: Callable[[re.Match[str]], ModelFactory]) -> Callable[[re.Match[str]], ModelFactory]:
        _PATTERNS.append((re.compile(pattern), description, resolver))
        return resolver

    return add


def model_patterns() -> list[str]:
    """Descriptions of the name patterns built without being listed, e.g. ``resnetD (any D = 6n+2)``."""
    MODELS.names()  # the techniques' patterns register with their plug-ins
    return [description for _, description, _ in _PATTERNS]


def _resolve(name: str) -> ModelFactory:
    if name in MODELS:  # a miss first loads the plug-ins, which register their patterns too
        return MODELS.get(name)
    for pattern, _, resolver in _PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            return resolver(match)
    valid = [*MODELS.names(), *model_patterns()]
    raise LeannetError(
        f"unknown model '{name}'; valid models: {', '.join(valid)}, "
        f"or tv:<torchvision name> / timm:<timm name>"
    )


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    norm: str = "bn",
    width: float = 1.0,
    image_size: int | tuple[int, int] | None = None,
    tasks: dict[str, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a freshly initialized model by name.

    ``name`` is a registered leannet model (``MODELS.names()``, e.g. ``resnet20``; ``resnetD`` for
    any depth D = 6n+2), ``tv:<name>`` for torchvision or ``timm:<name>`` for timm (random weights).
    ``norm`` is a name registered in ``NORMS``; ``width`` multiplies channel counts (leannet models
    only); ``image_size`` is the input height/width, needed by models whose layer sizes depend on it
    (``mlp``) and not forwarded to external models. ``tasks`` (task → head channels) of a dense multi-task
    dataset goes to factories that declare it (multi-task models); a classifier refuses dense data.
    Other keyword arguments go to the model factory.
    """
    if num_classes < 1 or in_channels < 1:
        raise LeannetError(f"num_classes and in_channels must be >= 1; got {num_classes}, {in_channels}")
    if width <= 0:
        raise LeannetError(f"width must be > 0; got {width}")
    NORMS.get(norm)  # fail on an unknown norm before building anything
    if tasks and (":" in name or "tasks" not in inspect.signature(_resolve(name)).parameters):
        raise LeannetError(f"model '{name}' is a classifier; dense multi-task data ({', '.join(tasks)}) needs a "
                           "multi-task model such as adashare_resnet")
    if ":" in name:
        return build_external(name, num_classes, in_channels=in_channels, norm=norm, width=width, **kwargs)
    factory = _resolve(name)
    params = inspect.signature(factory).parameters
    if image_size is not None and "image_size" in params:
        kwargs["image_size"] = image_size
    if tasks:
        kwargs["tasks"] = tasks
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise LeannetError(
            f"model '{name}' takes no argument {', '.join(unknown)}; it takes {', '.join(params)}"
        )
    return factory(num_classes=num_classes, in_channels=in_channels, norm=norm, width=width, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
