"""Training methods: a method turns a batch into `{"loss", "logits", ...named scalars}`.

This module sits below every technique and below the trainer: techniques import it to register their
methods (`leannet.plugins` imports the techniques), and `leannet.train` only looks methods up by name.

The trainer only calls a method and backpropagates `loss`; everything technique-specific lives in the
method. A method is an `nn.Module` that owns the model (and any extra modules or parameters, e.g.
self-distillation exits), so the optimizer and checkpoints see everything it trains.

Register a method with `@register_method("name")`. Its keyword-only constructor arguments are the
recipe keys under `method:`; their type hints and defaults are the schema that validates them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register


class Method(nn.Module):
    """Base class: wraps `model`; subclasses implement `forward(batch) -> dict`.

    `predict(x)` gives the logits used for evaluation (the model's own output unless a method
    says otherwise, e.g. an ensemble of exits). A method whose targets are not class labels (e.g.
    dense multi-task targets) overrides `eval_metrics` and `evaluate` instead, and names the validation
    score that picks best.ckpt in `monitor`.
    """

    monitor: tuple[str, str] = ("acc", "max")  # validation metric (logged as val/<name>) and its direction
    unused_parameters: bool = False  # some parameters get no gradient in some steps (DDP must look for them)
    # trainer.precision values (Lightning's names) the method cannot train in -> why (leannet.train.precision)
    precision_refusals: dict[str, str] = {}

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)

    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        """Every output evaluated: name -> logits. "" is `predict(x)` (logged as `acc`); a method with
        several classifiers adds named ones (logged as `acc_<name>`, e.g. BYOT's exits and ensemble)."""
        return {"": self.predict(x)}

    def eval_metrics(self) -> dict[str, Any] | None:
        """Named torchmetrics `Metric`s whose `compute()` returns a dict of scores, logged per epoch as
        `<stage>/<name>/<score>`; None (the default) evaluates `eval_logits` by class accuracy."""
        return None

    def evaluate(self, batch: tuple[Tensor, Any], metrics: dict[str, Any]) -> dict[str, Tensor]:
        """With `eval_metrics`: update `metrics` (fresh copies of them) on one batch and return scalars to
        log as `<stage>/<name>` (e.g. the loss)."""
        raise NotImplementedError(f"{type(self).__name__} defines eval_metrics but not evaluate")

    def train_subset(self, epoch: int, size: int) -> Tensor | None:
        """The indices (of the `size` training samples) that training epoch `epoch` (from 0) uses, as a pure
        function of the epoch; None (the default) uses them all. A subset needs a loader with a `plan`
        (the dense in-memory loader)."""
        return None

    def start_epoch(self, epoch: int) -> None:
        """Called before every training epoch (from 0, also after a resume); the default does nothing."""

    def extra_optimizers(self) -> dict[str, Any]:
        """Optimizers the method builds for parameters of its own (e.g. AdaShare's policy logits with
        Adam); the recipe's `optim:` then trains every other parameter. With any, a batch steps the one
        named in its output's `"optimizer"` entry ("" or absent: the recipe's, which alone has the schedule).
        Every call must return the same optimizer objects (build them once): the trainer asks more than once."""
        return {}

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. to clamp weights); the default does nothing."""

    def fit_start(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Called once when training starts (and again on resume) with a fresh pass over the training
        batches, already on the model's device and memory format (e.g. to re-estimate a teacher's
        BatchNorm statistics); the default does nothing and never iterates `batches`."""

    def summary(self) -> dict[str, float]:
        """Extra entries for the run's results.json (e.g. a teacher's accuracy); the default adds none."""
        return {}

    @classmethod
    def prepare(cls, config: Any, run_dir: Any) -> Any:
        """Prerequisite stages before `run_dir` is trained (e.g. train a teacher); returns the config to train.

        Called by `leannet.train.train` with the resolved recipe; the returned config is the one
        saved in `config.yaml`, so a resumed run does not repeat the stages. The default does nothing.
        """
        return config


@register_method("ce")
class CrossEntropy(Method):
    """Plain cross-entropy on hard labels: L = −log softmax(z)_y."""

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}


def method_params(name: str) -> dict[str, inspect.Parameter]:
    """The recipe keys a method accepts: its keyword-only constructor parameters."""
    signature = inspect.signature(METHODS.get(name).__init__)
    return {p.name: p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}


def _check_type(method: str, param: inspect.Parameter, value: Any) -> Any:
    default = param.default
    if default is inspect.Parameter.empty or default is None or value is None:
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise LeannetError(
            f"method.{param.name} of '{method}' must be {kind.__name__}, got {value!r}"
        )
    return value


def build_method(config: dict[str, Any], model: nn.Module, num_classes: int,
                 input_shape: tuple[int, ...] | None = None) -> Method:
    """Build the method named in `config["name"]` around `model`, validating its other keys.

    `input_shape` (C, H, W) of the data is passed to methods that declare an `input_shape` key and
    whose recipe leaves it unset (e.g. BYOT reads its exits' shapes from one probe input).
    """
    config = dict(config)
    name = config.pop("name")
    params = method_params(name)
    unknown = sorted(set(config) - set(params))
    if unknown:
        valid = ", ".join(sorted(params)) or "(none)"
        raise LeannetError(f"unknown key(s) {unknown} for method '{name}'; valid keys: {valid}")
    if input_shape is not None and "input_shape" in params and config.get("input_shape") is None:
        config["input_shape"] = list(input_shape)
    kwargs = {key: _check_type(name, params[key], value) for key, value in config.items()}
    return METHODS.get(name)(model, num_classes, **kwargs)
