"""Spiking layers over time-major tensors [T, B, …], built on `lif_psc` (TSSL-BP paper file, Neuron).

A spiking layer takes the PSCs of the previous layer, applies the same weights at every step to get
input currents, and passes its own PSCs on. The learning rule (``rule``) and the silent-neuron
fallback are attributes of each `LIF` so a method can switch them for a whole network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.spiking.neurons import RULES, lif_psc_spikes, psc_filter


class LIF(nn.Module):
    """LIF neurons with PSC output; records firing statistics of the last forward pass.

    ``rule``: "tssl" or "surrogate"; ``fallback``: whether TSSL-BP uses the sigmoid surrogate for
    silent neurons. After each forward, ``last_spikes`` (detached [T, B, …], only when
    ``record_spikes``) and the scalars ``firing_rate`` (spikes per neuron per step) and
    ``silent_fraction`` (neurons that never fire in the T steps) are kept.
    """

    def __init__(self, tau_m: float = 5.0, tau_s: float = 3.0, threshold: float = 1.0,
                 rule: str = "tssl", fallback: bool = True) -> None:
        super().__init__()
        if rule not in RULES:
            raise LeannetError(f"unknown learning rule '{rule}'; valid rules: {', '.join(RULES)}")
        self.tau_m, self.tau_s, self.threshold = tau_m, tau_s, threshold
        self.rule, self.fallback = rule, fallback
        self.record_spikes = False
        self.last_spikes: Tensor | None = None
        self.firing_rate: Tensor | None = None
        self.silent_fraction: Tensor | None = None

    def forward(self, current: Tensor) -> Tensor:
        psc, spikes = lif_psc_spikes(current, self.tau_m, self.tau_s, self.threshold, self.rule, self.fallback)
        with torch.no_grad():
            self.firing_rate = spikes.mean()
            self.silent_fraction = (spikes.sum(0) == 0).float().mean()
            self.last_spikes = spikes if self.record_spikes else None
        return psc

    def extra_repr(self) -> str:
        return (f"tau_m={self.tau_m}, tau_s={self.tau_s}, threshold={self.threshold}, rule={self.rule}, "
                f"fallback={self.fallback}")


def _per_step(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a stateless layer to each step of [T, B, …] at once (folding T into the batch)."""
    y = layer(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def _kaiming(weight: Tensor) -> None:
    nn.init.kaiming_normal_(weight)  # the released code's initialization (fan-in, gain √2)


class SpikingLinear(nn.Module):
    """I_t = W·a^pre_t (no bias), then `LIF`; input [T, B, …] is flattened per step."""

    def __init__(self, in_features: int, out_features: int, **neuron: float | str | bool) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=False)
        _kaiming(self.fc.weight)
        self.neuron = LIF(**neuron)

    def forward(self, x: Tensor) -> Tensor:
        return self.neuron(self.fc(x.flatten(2)))


class SpikingConv2d(nn.Module):
    """I_t = W ∗ a^pre_t (the same 2-D conv at every step, no bias, 'same' padding), then `LIF`.

    'Same' padding keeps H×W for every kernel size: k//2 zeros on each side for odd k; for even k, k/2 − 1
    at the top and left and k/2 at the bottom and right (as PyTorch's ``padding="same"``), in ``pad``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, init_scale: float = 1.0,
                 **neuron: float | str | bool) -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise LeannetError(f"spiking conv kernel size must be an integer >= 1, got {kernel_size}")
        odd = kernel_size % 2 == 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2 if odd else 0,
                              bias=False)
        low, high = (kernel_size - 1) // 2, kernel_size // 2
        self.pad = None if odd else (low, high, low, high)  # F.pad order: left, right, top, bottom
        _kaiming(self.conv.weight)
        self.conv.weight.data.mul_(init_scale)  # the released code's weight_scale (5 for its CIFAR-10 convs)
        self.neuron = LIF(**neuron)

    def _same(self, z: Tensor) -> Tensor:
        return self.conv(z if self.pad is None else F.pad(z, self.pad))

    def forward(self, x: Tensor) -> Tensor:
        return self.neuron(_per_step(self._same, x))


class SumPool2d(nn.Module):
    """Fixed k×k sum-pool of PSCs times ``scale`` (1.1 in the released code); no neuron, no weights."""

    def __init__(self, kernel_size: int = 2, scale: float = 1.1) -> None:
        super().__init__()
        self.kernel_size, self.scale = kernel_size, scale

    def forward(self, x: Tensor) -> Tensor:
        area = self.kernel_size ** 2
        return _per_step(lambda z: F.avg_pool2d(z, self.kernel_size) * (area * self.scale), x)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, scale={self.scale}"


class TimeDropout(nn.Module):
    """Dropout whose mask is drawn once per sample and kept for all T steps (inverted scaling)."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise LeannetError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x[0]).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


ENCODINGS = ("analog", "poisson")


def encode(x: Tensor, steps: int, tau_s: float = 3.0, encoding: str = "analog") -> Tensor:
    """Images [B, …] → input PSCs [T, B, …] (paper file, Neuron: static images).

    ``analog``: the (normalised) image is the input at every step, passed through the PSC filter.
    ``poisson``: rate coding, a spike with probability given by the image rescaled per sample to
    [0, 1], then the PSC filter. Event data already shaped [B, T, …] is moved to [T, B, …] and filtered.
    """
    if encoding not in ENCODINGS:
        raise LeannetError(f"unknown encoding '{encoding}'; valid encodings: {', '.join(ENCODINGS)}")
    if steps < 1:
        raise LeannetError(f"need at least one time step, got {steps}")
    if encoding == "poisson":
        flat = x.flatten(1)
        low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        rate = ((flat - low) / (high - low).clamp(min=1e-12)).reshape(x.shape)
        series = torch.bernoulli(rate.unsqueeze(0).expand(steps, *x.shape))
    else:
        series = x.unsqueeze(0).expand(steps, *x.shape)
    return psc_filter(series, tau_s)


def spiking_neurons(model: nn.Module) -> list[tuple[str, LIF]]:
    """(module path, LIF) for every spiking neuron layer of ``model``, in forward order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LIF)]

