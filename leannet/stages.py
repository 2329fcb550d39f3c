"""Recipe sections that change how a run is built or trained, registered by the techniques that own them.

* A model transform ``transform(model, config) -> model`` runs on every freshly built model, in
  registration order, e.g. ``freeze`` (BatchNorm-only training, `leannet.norm.bn_only`); it returns
  the model unchanged when its section is off.
* A run loop replaces the single fit of a run when ``active(config)`` holds, e.g. ``evolve``
  (Knowledge Evolution's generations, `leannet.evolve.generations`). It is called as
  ``run(config, run_dir, resume, callbacks, train_once)`` where ``train_once`` trains one ordinary run.

The trainer (`leannet.train.run`) only applies what is registered here, so it names no technique.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from leannet.errors import LeannetError
from leannet.registry import Registry

ModelTransform = Callable[[nn.Module, Any], nn.Module]
MODEL_TRANSFORMS: Registry[ModelTransform] = Registry("model transform")
register_transform = MODEL_TRANSFORMS.register


@dataclass(frozen=True)
class RunLoop:
    """``run(config, run_dir, resume, callbacks, train_once) -> results`` used when ``active(config)``."""

    active: Callable[[Any], bool]
    run: Callable[..., dict[str, Any]]

    def __call__(self, *args: Any) -> dict[str, Any]:
        return self.run(*args)


RUN_LOOPS: Registry[RunLoop] = Registry("run loop")


def register_loop(section: str, active: Callable[[Any], bool]) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorator: ``run`` trains recipes whose ``active(config)`` is true (named after its config section)."""

    def add(run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        RUN_LOOPS.register(section)(RunLoop(active, run))
        return run

    return add


def apply_transforms(model: nn.Module, config: Any) -> nn.Module:
    """Every registered model transform, in registration order."""
    for name in MODEL_TRANSFORMS.registration_order():
        model = MODEL_TRANSFORMS.get(name)(model, config)
    return model


def active_loop(config: Any) -> RunLoop | None:
    """The one run loop whose section is on in `config` (None: a single ordinary fit)."""
    names = [name for name in RUN_LOOPS.registration_order() if RUN_LOOPS.get(name).active(config)]
    if len(names) > 1:
        raise LeannetError(f"recipe sections {names} each replace the training loop; turn all but one off")
    return RUN_LOOPS.get(names[0]) if names else None
