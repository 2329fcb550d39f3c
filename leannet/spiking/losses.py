"""TSSL-BP losses (pure functions) and the training methods built on them.

Losses (paper file, Loss), on output PSCs ``out`` [T, B, K] and labels [B]:

* `kernel_loss`: ½ Σ_{b,k,t} (a_t − (ε∗s^des)_t)², s^des the target spike train for the label class
  (paper default [0, 1, 0, 1, 1] for T = 5; the released code later used [0, 1, 1, 1, 1]) and no
  spikes for the other classes. Summed over the batch as in the released code.
* `count_loss`: e_k = (Σ_t a_t − c_k)/T with c = ``desired`` for the label and ``undesired``
  otherwise, one-sided (the label is not pushed down, the others are not pushed up), ½ Σ e².

Methods ``snn_kernel`` and ``snn_count`` train a `SpikingNet` with either learning rule, clamp the
weights to [−clamp, clamp] after every optimizer step, and return spike statistics (firing rate
and silent fraction per spiking layer and overall) as scalars so they are logged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.method import Method, register_method
from leannet.spiking.layers import spiking_neurons
from leannet.spiking.neurons import RULES, psc_filter

PAPER_PATTERN = (0, 1, 0, 1, 1)
FALLBACKS = ("always", "warmup", "never")


def target_train(pattern: list[int] | tuple[int, ...] | None, steps: int) -> Tensor:
    """The desired spike train of length T: ``pattern`` tiled/truncated to T (default the paper's)."""
    base = list(PAPER_PATTERN if pattern is None else pattern)
    if not base or any(v not in (0, 1) for v in base):
        raise LeannetError(f"target spike pattern must be a non-empty list of 0/1, got {pattern}")
    return torch.tensor((base * (steps // len(base) + 1))[:steps], dtype=torch.float32)


def check_labels(labels: Tensor, classes: int) -> None:
    """Labels must index the K output classes: a negative one would silently pick a class from the end."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise LeannetError(f"labels must be in 0..{classes - 1} ({classes} output classes), got {bad}; "
                           "check the dataset's labels or the model's number of classes")


def kernel_loss(out: Tensor, labels: Tensor, pattern: list[int] | tuple[int, ...] | None = None,
                tau_s: float = 3.0) -> Tensor:
    """½ Σ (a_t − (ε∗s^des)_t)² over batch, classes and steps (TSSL-BP kernel loss)."""
    steps, batch, classes = out.shape
    check_labels(labels, classes)
    desired = psc_filter(target_train(pattern, steps).to(out), tau_s)
    target = torch.zeros_like(out)
    target[:, torch.arange(batch, device=out.device), labels] = desired[:, None]
    return 0.5 * (out - target).pow(2).sum()


def count_loss(out: Tensor, labels: Tensor, desired: float = 15.0, undesired: float = 3.0) -> Tensor:
    """One-sided count loss ½ Σ e², e = (Σ_t a_t − c)/T (TSSL-BP N-MNIST loss)."""
    steps = out.shape[0]
    check_labels(labels, out.shape[2])
    count = out.sum(0)
    is_label = torch.zeros_like(count, dtype=torch.bool)
    is_label[torch.arange(count.shape[0], device=out.device), labels] = True
    err = torch.where(is_label, (count - desired).clamp(max=0.0), (count - undesired).clamp(min=0.0)) / steps
    return 0.5 * err.pow(2).sum()


class SpikingMethod(Method):
    """Shared part of the spiking methods: learning rule, fallback schedule, weight clamp, statistics."""

    precision_refusals = {p: "its small weight steps (AdamW 5e-4) and the weight clamp act on half-precision "
                             "weights, where steps far below a weight's size round away"
                          for p in ("16-true", "bf16-true")}

    def __init__(self, model: nn.Module, num_classes: int, *, rule: str = "tssl", fallback: str = "always",
                 fallback_warmup_steps: int = 1000, weight_clamp: float = 4.0) -> None:
        super().__init__(model, num_classes)
        if not hasattr(model, "forward_series"):
            raise LeannetError(f"spiking methods need a spiking model (snn_<spec>), got {type(model).__name__}")
        if rule not in RULES:
            raise LeannetError(f"unknown method.rule '{rule}'; valid rules: {', '.join(RULES)}")
        if fallback not in FALLBACKS:
            raise LeannetError(f"unknown method.fallback '{fallback}'; valid: {', '.join(FALLBACKS)}")
        self.rule, self.fallback, self.warmup = rule, fallback, fallback_warmup_steps
        self.weight_clamp = weight_clamp
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._host_steps: int | None = None  # steps_done on the host: read once (after a load), then counted
        self.neurons = spiking_neurons(model)
        for _, neuron in self.neurons:
            neuron.rule = rule

    def _set_fallback(self) -> None:
        if self.fallback == "warmup" and self._host_steps is None:
            self._host_steps = int(self.steps_done)  # one read of the device counter, not one per step
        on = self.fallback == "always" or (self.fallback == "warmup" and self._host_steps < self.warmup)
        for _, neuron in self.neurons:
            neuron.fallback = on

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003  (nn.Module's hook)
        super()._load_from_state_dict(*args, **kwargs)
        self._host_steps = None  # steps_done changed (a resume): read it again

    def loss(self, out: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        self._set_fallback()
        out = self.model.forward_series(x)
        result = {"loss": self.loss(out, y), "logits": out.detach().sum(0)}
        result.update(spike_stats(self.neurons))
        return result

    @torch.no_grad()
    def after_step(self) -> None:
        """Clamp every weight to [−c, c] (paper: c = 4) and count steps for the fallback warm-up."""
        self.steps_done += 1
        if self._host_steps is not None:
            self._host_steps += 1
        if self.weight_clamp > 0:
            for p in self.model.parameters():
                p.clamp_(-self.weight_clamp, self.weight_clamp)


def spike_stats(neurons: list[tuple[str, nn.Module]]) -> dict[str, Tensor]:
    """Firing rate and silent fraction per spiking layer (``rate/<i>``, ``silent/<i>``) and overall."""
    stats: dict[str, Tensor] = {}
    rates, silents = [], []
    for i, (_, neuron) in enumerate(neurons):
        if neuron.firing_rate is None:
            continue
        stats[f"rate/{i}"] = neuron.firing_rate
        stats[f"silent/{i}"] = neuron.silent_fraction
        rates.append(neuron.firing_rate)
        silents.append(neuron.silent_fraction)
    if rates:
        stats["firing_rate"] = torch.stack(rates).mean()
        stats["silent_fraction"] = torch.stack(silents).mean()
    return stats


@register_method("snn_kernel")
class SpikingKernel(SpikingMethod):
    """TSSL-BP kernel loss (paper file, Loss) with ``target`` spike pattern (default [0,1,0,1,1])."""

    def __init__(self, model: nn.Module, num_classes: int, *, rule: str = "tssl", fallback: str = "always",
                 fallback_warmup_steps: int = 1000, weight_clamp: float = 4.0,
                 target: list | None = None) -> None:
        super().__init__(model, num_classes, rule=rule, fallback=fallback,
                         fallback_warmup_steps=fallback_warmup_steps, weight_clamp=weight_clamp)
        target_train(target, 1)  # validate early
        self.target = None if target is None else [int(v) for v in target]

    def loss(self, out: Tensor, labels: Tensor) -> Tensor:
        return kernel_loss(out, labels, self.target, self.model.tau_s)


@register_method("snn_count")
class SpikingCount(SpikingMethod):
    """TSSL-BP one-sided count loss (paper file, Loss; N-MNIST: desired 15, undesired 3)."""

    def __init__(self, model: nn.Module, num_classes: int, *, rule: str = "tssl", fallback: str = "always",
                 fallback_warmup_steps: int = 1000, weight_clamp: float = 4.0,
                 desired: float = 15.0, undesired: float = 3.0) -> None:
        super().__init__(model, num_classes, rule=rule, fallback=fallback,
                         fallback_warmup_steps=fallback_warmup_steps, weight_clamp=weight_clamp)
        self.desired, self.undesired = desired, undesired

    def loss(self, out: Tensor, labels: Tensor) -> Tensor:
        return count_loss(out, labels, self.desired, self.undesired)
