"""Be Your Own Teacher (BYOT): self distillation through shallow classifiers (Zhang et al., ICCV 2019).

`SelfDistillation(model, exits=[module paths])` attaches a shallow classifier (bottleneck → global
average pooling → linear) after each named module through forward hooks: the wrapped model is not
edited and its own output is unchanged. The model's own head is the deepest classifier.

Loss (paper §3, the unofficial code's weighting; i runs over the shallow classifiers):

    L = (1−α)·Σ_all CE(z_j, y) + α·T²·Σ_i KL(softmax(z_deep/T) ‖ softmax(z_i/T)) + λ·Σ_i ‖f_i − f_deep‖²

The deepest classifier (z_deep, f_deep = the input of the model's head) is the detached teacher, so
it learns from the labels only. `target` swaps the per-classifier CE for LSR or Tf-KD_reg.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leannet.distill.losses import kd_loss, label_smoothing_loss, tfkd_reg_loss
from leannet.errors import LeannetError
from leannet.method import Method, register_method
from leannet.models.macs import count_macs  # noqa: F401  (re-exported: leannet.distill.count_macs)
from leannet.models.norms import make_norm

TARGETS = ("ce", "lsr", "tfkd_reg")
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass
class SelfDistillationOutput:
    """What `SelfDistillation(x)` returns.

    logits:         the deepest classifier's logits (the wrapped model's own output), (N, K).
    exit_logits:    the shallow classifiers' logits, shallowest first, each (N, K).
    exit_features:  their bottleneck features f_i after pooling, each (N, D) with D the deepest width.
    feature:        the deepest feature f_deep (the input of the model's head), (N, D).
    """

    logits: Tensor
    exit_logits: list[Tensor]
    exit_features: list[Tensor]
    feature: Tensor

    @property
    def all_logits(self) -> list[Tensor]:
        """Every classifier's logits, shallowest first, deepest last (classifier k is index k−1)."""
        return [*self.exit_logits, self.logits]

    @property
    def ensemble(self) -> Tensor:
        """The ensemble of all classifiers: mean of their logits."""
        return torch.stack(self.all_logits).mean(dim=0)


class _Stop(Exception):
    """Raised by an exit hook to end the backbone's forward early (carries the exit's features)."""

    def __init__(self, features: Tensor) -> None:
        super().__init__()
        self.features = features


def _first_tensor(output: object) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise LeannetError(f"an exit module must output a tensor, got {type(output).__name__}")


def default_exits(model: nn.Module) -> tuple[list[str], str]:
    """Stage outputs (all but the last stage) and the head of leannet CIFAR ResNets and torchvision ResNets.

    Both name their stages `layer1` … `layerK` and their head `fc`; the last stage feeds the head, so
    the shallow exits are `layer1` … `layer{K−1}`.
    """
    names = dict(model.named_children())
    stages = sorted((n for n in names if n.startswith("layer") and n[5:].isdigit()), key=lambda n: int(n[5:]))
    if len(stages) < 2 or "fc" not in names:
        raise LeannetError(
            f"no default exits for {type(model).__name__} (it has no layer1..layerK stages and fc head); "
            "pass exits=[module paths] and head=<path of the final classifier>"
        )
    return stages[:-1], "fc"


class Bottleneck(nn.Module):
    """A shallow classifier's feature adaptation (BYOT §3.1, unofficial-code form), then pooling.

    1×1 conv to `mid` channels + norm + ReLU → k×k conv with stride k (k = the exit's spatial size over
    the deepest one, so the output matches the deepest feature map) + norm + ReLU → 1×1 conv to the
    deepest width + norm + ReLU → global average pooling. Output (N, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, mid: int = 128, norm: str = "bn") -> None:
        super().__init__()
        k = max(1, stride)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), make_norm(norm, mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, stride=k, bias=False), make_norm(norm, mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False), make_norm(norm, out_channels), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ShallowClassifier(nn.Module):
    """Bottleneck + linear layer: returns (logits, pooled feature f_i)."""

    def __init__(self, bottleneck: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.bottleneck(x)
        return self.fc(f), f


class SelfDistillation(nn.Module):
    """Wraps any classifier with BYOT shallow classifiers attached by forward hooks (no model edits).

    Args:
        model: the network; its own output is the deepest classifier.
        exits: module paths (as in `model.named_modules()`) after which a shallow classifier is
            attached, shallowest first. Default: the stage outputs of leannet/torchvision ResNets.
        head: path of the final classifier whose *input* is the deepest feature f_deep (default `fc`).
        input_shape: (C, H, W) of one probe input used to read every exit's channels and size
            (default: the first conv's input channels at 32×32).
        mid_channels, norm: the bottleneck's width (default: the exit's own channels; the unofficial
            code's 128 suits ResNet-18's 64–512-channel stages, but would cost a ResNet-20 (16–64
            channels) as much as its backbone) and norm layer (a `leannet.models` norm name).
        bottleneck: optional factory (in_channels, out_channels, stride) -> module returning (N, D)
            features, replacing `Bottleneck`.

    `forward(x)` returns a `SelfDistillationOutput`; `exit_at(k)` a network that stops at classifier k
    (1-based; k = len(exits)+1 is the deepest); `export()` the plain model without the shallow classifiers.
    The shallow classifiers take the model's device and dtype when built, and follow it when the model is
    moved on its own (checked at each forward; `.to()` of the wrapper moves both anyway).
    """

    def __init__(
        self,
        model: nn.Module,
        exits: Sequence[str] | None = None,
        head: str | None = None,
        input_shape: tuple[int, int, int] | None = None,
        mid_channels: int | None = None,
        norm: str = "bn",
        bottleneck: Callable[[int, int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if exits is None or head is None:
            default_e, default_h = default_exits(model)
            exits = default_e if exits is None else exits
            head = default_h if head is None else head
        modules = dict(model.named_modules())
        missing = [p for p in [*exits, head] if p not in modules]
        if missing:
            raise LeannetError(
                f"module path(s) {missing} not in {type(model).__name__}; valid paths include: "
                f"{', '.join(list(n for n in modules if n and '.' not in n))}"
            )
        if not exits:
            raise LeannetError("SelfDistillation needs at least one exit module path")
        self.model = model
        self.exit_names = list(exits)
        self.head_name = head
        self._hooked = [modules[p] for p in [*self.exit_names, head]]  # a list: not registered as submodules
        self._capture: dict[str, Tensor] | None = None
        self._stop_at: int | None = None
        self._handles: list = []
        self._attach()
        shapes, feature_dim, num_classes = self._probe(input_shape)
        deep_size = shapes["deep"][-1]
        make = bottleneck or (lambda c, d, s: Bottleneck(c, d, s, mid_channels or c, norm))
        self.classifiers = nn.ModuleList(
            ShallowClassifier(make(shapes[n][0], feature_dim, max(1, round(shapes[n][-1] / deep_size))),
                              feature_dim, num_classes)
            for n in self.exit_names
        )
        self.num_classes = num_classes
        self._follow_model()

    def _follow_model(self) -> None:
        """Put the shallow classifiers on the wrapped model's device and dtype (its first parameter's): they
        are built in the defaults, and the model may be moved on its own (``model.double()``) after wrapping."""
        param = next(self.model.parameters(), None)
        mine = next(self.classifiers.parameters(), None)
        if param is not None and mine is not None and param.is_floating_point() \
                and (mine.device, mine.dtype) != (param.device, param.dtype):
            self.classifiers.to(device=param.device, dtype=param.dtype)

    # hooks -----------------------------------------------------------------
    def _attach(self) -> None:
        *exits, head = self._hooked
        for k, module in enumerate(exits):
            self._handles.append(module.register_forward_hook(functools.partial(self._exit_hook, k)))
        self._handles.append(head.register_forward_pre_hook(self._head_hook))

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _exit_hook(self, k: int, module: nn.Module, inputs: tuple, output: object) -> None:
        # a partial of a bound method (not a closure), so that copy.deepcopy re-binds it to the copy
        if self._stop_at == k:
            raise _Stop(_first_tensor(output))
        if self._capture is not None:
            self._capture[self.exit_names[k]] = _first_tensor(output)

    def _head_hook(self, module: nn.Module, inputs: tuple) -> None:
        if self._capture is not None:
            self._capture["deep"] = inputs[0]

    def _run(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        self._capture = {}
        try:
            logits = self.model(x)
            captured = self._capture
        finally:
            self._capture = None
        missing = [n for n in [*self.exit_names, "deep"] if n not in captured]
        if missing:
            raise LeannetError(f"modules {missing} did not run in the model's forward; choose other exit paths")
        return logits, captured

    @torch.no_grad()
    def _probe(self, input_shape: tuple[int, int, int] | None) -> tuple[dict[str, tuple[int, ...]], int, int]:
        """One forward of a zero image (eval mode: no running-statistics update) to read the shapes."""
        if input_shape is None:
            conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
            if conv is None:
                raise LeannetError("cannot guess the input shape (no Conv2d); pass input_shape=(C, H, W)")
            input_shape = (conv.in_channels, 32, 32)
        maps: list[int] = []  # spatial sizes of the 4-D outputs of leaf modules, pooling excluded

        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, Tensor) and output.ndim == 4 and not isinstance(module, _POOLS):
                maps.append(output.shape[-1])

        leaves = [m.register_forward_hook(record) for m in self.model.modules() if not list(m.children())]
        param = next(self.model.parameters())
        was_training = self.model.training
        self.model.eval()
        try:
            logits, captured = self._run(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
        finally:
            self.model.train(was_training)
            for handle in leaves:
                handle.remove()
        shapes = {}
        for name in self.exit_names:
            t = captured[name]
            if t.ndim != 4:
                raise LeannetError(
                    f"exit '{name}' outputs shape {tuple(t.shape)}; exits need (N, C, H, W) feature maps")
            shapes[name] = tuple(t.shape[1:])
        deep = captured["deep"]
        if deep.ndim != 2:
            raise LeannetError(f"the head '{self.head_name}' input has shape {tuple(deep.shape)}; "
                               "it must be a pooled (N, D) feature: pick the final linear layer as head")
        shapes["deep"] = (deep.shape[1], maps[-1] if maps else 1)  # the last feature map before pooling
        return shapes, deep.shape[1], logits.shape[1]

    # API -------------------------------------------------------------------
    @property
    def num_exits(self) -> int:
        """Number of classifiers, the deepest included."""
        return len(self.exit_names) + 1

    def forward(self, x: Tensor) -> SelfDistillationOutput:
        self._follow_model()
        logits, captured = self._run(x)
        exit_logits, exit_features = [], []
        for name, classifier in zip(self.exit_names, self.classifiers, strict=True):
            z, f = classifier(captured[name])
            exit_logits.append(z)
            exit_features.append(f)
        return SelfDistillationOutput(logits, exit_logits, exit_features, captured["deep"])

    def exit_at(self, k: int) -> nn.Module:
        """A network computing classifier k only (1-based): the backbone stops after exit module k.

        k = `num_exits` is the deepest classifier: the wrapped model itself. Shares the weights.
        """
        if not 1 <= k <= self.num_exits:
            raise LeannetError(f"exit {k} out of range; this model has classifiers 1..{self.num_exits}")
        if k == self.num_exits:
            return _Deepest(self)
        return EarlyExit(self, k - 1)

    def export(self) -> nn.Module:
        """The plain wrapped model (its original class, shallow classifiers dropped), a deep copy without hooks.

        Its `state_dict()` loads into a freshly built model of the same class, without leannet.
        """
        self._detach()
        try:
            return copy.deepcopy(self.model)
        finally:
            self._attach()


class EarlyExit(nn.Module):
    """Classifier `index`+1 of a `SelfDistillation`: runs the backbone up to its exit module, then stops."""

    def __init__(self, net: SelfDistillation, index: int) -> None:
        super().__init__()
        self.net = net
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        self.net._follow_model()
        self.net._stop_at = self.index
        try:
            self.net.model(x)
        except _Stop as stop:
            return self.net.classifiers[self.index](stop.features)[0]
        finally:
            self.net._stop_at = None
        raise LeannetError(f"exit module '{self.net.exit_names[self.index]}' did not run")


class _Deepest(nn.Module):
    def __init__(self, net: SelfDistillation) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.model(x)


# pure functions -----------------------------------------------------------------------------------
def hint_loss(features: Tensor, target: Tensor) -> Tensor:
    """BYOT's L2 hint ‖f_i − f_deep‖², summed over the batch and features (paper Eq. 3, `sum` as in the
    unofficial code); the deepest feature is detached."""
    return (features.float() - target.detach().float()).pow(2).sum()


def byot_loss(
    out: SelfDistillationOutput,
    labels: Tensor,
    alpha: float = 0.1,
    temperature: float = 3.0,
    hint_weight: float = 1e-6,
    target_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """The BYOT objective (paper §3.2, Eq. 1–3 with the unofficial code's weights):

    (1−α)·Σ_all target(z_j, y) + α·Σ_i T²·KL(softmax(z_deep/T) ‖ softmax(z_i/T)) + λ·Σ_i ‖f_i − f_deep‖².

    `target_loss(logits, labels)` defaults to cross-entropy. Returns the total as `loss` and its three terms.
    """
    target_loss = target_loss or (lambda z, y: F.cross_entropy(z.float(), y))
    sup = sum(target_loss(z, labels) for z in out.all_logits)
    kl = sum(kd_loss(z, out.logits, temperature) for z in out.exit_logits)
    hint = sum(hint_loss(f, out.feature) for f in out.exit_features)
    loss = (1.0 - alpha) * sup + alpha * kl + hint_weight * hint
    return {"loss": loss, "sup": sup, "kl": kl, "hint": hint}


def dynamic_exit(exit_logits: Sequence[Tensor], threshold: float) -> Tensor:
    """Confidence-based early exit: for each sample the first classifier whose max softmax ≥ `threshold`
    (the deepest when none is); returns the chosen 0-based classifier index per sample."""
    probs = torch.stack([F.softmax(z.float(), dim=1).amax(dim=1) for z in exit_logits])  # (E, N)
    confident = probs >= threshold
    confident[-1] = True
    return confident.float().argmax(dim=0)


def dynamic_exit_curve(
    exit_logits: Sequence[Tensor], labels: Tensor, exit_costs: Sequence[float], thresholds: Sequence[float]
) -> list[dict[str, float]]:
    """Accuracy and average cost of `dynamic_exit` for each threshold.

    `exit_costs[k]` is the cost of a sample that stops at classifier k (for sequential inference: the
    backbone up to exit k plus the shallow classifiers 1..k it evaluated on the way).
    """
    costs = torch.tensor(list(exit_costs), dtype=torch.float64)
    preds = torch.stack([z.argmax(dim=1) for z in exit_logits])  # (E, N)
    rows = []
    for t in thresholds:
        chosen = dynamic_exit(exit_logits, t)
        pred = preds.gather(0, chosen[None]).squeeze(0)
        rows.append({
            "threshold": float(t),
            "accuracy": (pred == labels).float().mean().item(),
            "avg_cost": costs[chosen].mean().item(),
            **{f"frac_exit{k + 1}": (chosen == k).float().mean().item() for k in range(len(exit_logits))},
        })
    return rows


# the recipe method -------------------------------------------------------------------------------
@register_method("byot")
class BYOT(Method):
    """BYOT as a recipe method: `method: {name: byot, alpha: 0.1, temperature: 3, hint_weight: 1e-6}`.

    Defaults are the paper file's unofficial-code values. `exits` (module paths) default to the stage
    outputs of leannet/torchvision ResNets; `mid_channels` 0 = each exit's own width. `target` replaces
    each classifier's CE: `lsr` (label smoothing `smoothing`) or `tfkd_reg`
    ((1−reg_alpha)·CE + reg_alpha·reg_multiplier·Tf-KD_reg at `reg_temperature`, `correct_prob`).
    Evaluation: `predict` is the deepest classifier; `eval_logits` adds every classifier
    (`exit1` … `exitN`, N the deepest) and their `ensemble`. `input_shape` [C, H, W] of the probe
    input that sizes the exits: filled in from the dataset by `leannet train` (e.g. [1, 28, 28]).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        alpha: float = 0.1,
        temperature: float = 3.0,
        hint_weight: float = 1e-6,
        exits: list | None = None,
        head: str | None = None,
        mid_channels: int = 0,
        exit_norm: str = "bn",
        target: str = "ce",
        smoothing: float = 0.1,
        reg_alpha: float = 0.1,
        reg_temperature: float = 20.0,
        correct_prob: float = 0.99,
        reg_multiplier: float = 1.0,
        input_shape: list | None = None,
    ) -> None:
        super().__init__(model, num_classes)
        if not 0.0 <= alpha <= 1.0:
            raise LeannetError(f"method.alpha must be in [0, 1], got {alpha}")
        if not temperature > 0 or hint_weight < 0:
            raise LeannetError(f"method.temperature must be > 0 and hint_weight >= 0, got {temperature}, {hint_weight}")
        if target not in TARGETS:
            raise LeannetError(f"unknown method.target '{target}'; valid: {', '.join(TARGETS)}")
        if exits is not None and (not isinstance(exits, (list, tuple)) or not all(isinstance(e, str) for e in exits)):
            raise LeannetError(f"method.exits must be a list of module paths, got {exits!r}")
        self.alpha, self.temperature, self.hint_weight = alpha, temperature, hint_weight
        if input_shape is not None and (len(input_shape) != 3 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_shape)):
            raise LeannetError(f"method.input_shape must be [C, H, W] (positive integers), got {input_shape!r}")
        shape = tuple(input_shape) if input_shape is not None else None
        self.net = SelfDistillation(model, exits, head, shape, mid_channels=mid_channels or None, norm=exit_norm)
        weight = next(model.parameters())
        if weight.ndim == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            self.net.classifiers.to(memory_format=torch.channels_last)
        self.target_loss = _target_loss(target, smoothing, reg_alpha, reg_temperature, correct_prob, reg_multiplier)

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        out = self.net(x)
        terms = byot_loss(out, y, self.alpha, self.temperature, self.hint_weight, self.target_loss)
        return {"loss": terms["loss"], "logits": out.logits,
                **{k: v.detach() for k, v in terms.items() if k != "loss"}}

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)

    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        out = self.net(x)
        named = {f"exit{k + 1}": z for k, z in enumerate(out.all_logits)}
        return {"": out.logits, **named, "ensemble": out.ensemble}


def _target_loss(target: str, smoothing: float, reg_alpha: float, reg_temperature: float, correct_prob: float,
                 reg_multiplier: float) -> Callable[[Tensor, Tensor], Tensor]:
    if target == "lsr":
        return lambda z, y: label_smoothing_loss(z, y, smoothing)
    if target == "tfkd_reg":
        def reg(z: Tensor, y: Tensor) -> Tensor:
            ce = F.cross_entropy(z.float(), y)
            reg_term = tfkd_reg_loss(z, y, reg_temperature, correct_prob)
            return (1 - reg_alpha) * ce + reg_alpha * reg_multiplier * reg_term
        return reg
    return lambda z, y: F.cross_entropy(z.float(), y)
