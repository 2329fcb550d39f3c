"""The discrete LIF neuron with post-synaptic-current (PSC) output and its two learning rules.

TSSL-BP (Zhang & Li, NeurIPS 2020), one neuron, steps t = 0 … T−1, time-major tensors [T, …]:

    u_t = (1 − 1/τ_m)·v_{t−1} + I_t          membrane before reset (v: after reset, v_{−1} = 0)
    s_t = 1[u_t > V_th],   v_t = u_t·(1 − s_t) hard reset
    a_t = (1 − 1/τ_s)·a_{t−1} + s_t/τ_s        PSC, i.e. kernel ε[k] = (1/τ_s)(1 − 1/τ_s)^k

Both rules map g_t = ∂L/∂a_t to δ_t = ∂L/∂I_t with one backward recurrence δ_t = B_t + A_t·δ_{t+1}
(the loop over T is the only Python loop; everything else is vectorised). With G_t = Σ_k ε[k]·g_{t+k}:

* ``"tssl"``: B_t = G_t/Δu_t at spikes (inter-neuron term, Δu_t = u_t − v_{t−1}, 1/Δu clamped to
  [0, 8] as the released code does), A_t = (u_t/τ_m)/Δu_t at spikes (intra-neuron term: the reset
  time moves) and (1 − 1/τ_m) at silent steps (leak). Where the neuron's PSC is below 1/(4τ_s), the
  output is the sigmoid surrogate σ'(u_t)·G_t instead (the "fallback"); the carry always keeps the
  TSSL value (paper file, §Backward).
* ``"surrogate"``: plain BPTT through the same neuron with the spike's derivative replaced by σ'
  (STBP / snnTorch style): B_t = σ'_t·G_t, A_t = (1 − 1/τ_m)·((1 − s_t) − σ'_t·u_t), the last term
  being the gradient through the hard reset.

σ'(u) = e^x / (a(1 + e^x)²), x = (V_th − u)/a, a = 0.2, computed in the overflow-free form
sig(y)(1 − sig(y))/a, y = (u − V_th)/a. The released code clamps x to [−8, 8], which keeps σ' from
falling below ≈1.7e-3 far from threshold; we use the unclamped equation (a documented difference).
"""

from __future__ import annotations

import torch
from torch import Tensor

from leannet.errors import LeannetError

RULES = ("tssl", "surrogate")
INV_DU_MAX = 8.0  # the released code's clamp of −∂t_f/∂u = 1/Δu
SURROGATE_WIDTH = 0.2


def psc_kernel(steps: int, tau_s: float, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
    """The [T, T] lower-triangular matrix K with K[t, t'] = ε[t − t'] = (1/τ_s)(1 − 1/τ_s)^(t−t').

    ``K @ s`` filters a spike train (or an analog input) into its PSC (paper file, Neuron).
    """
    t = torch.arange(steps, device=device, dtype=dtype)
    lag = t[:, None] - t[None, :]
    eps = (1.0 - 1.0 / tau_s) ** lag.clamp(min=0) / tau_s
    return torch.where(lag >= 0, eps, torch.zeros((), dtype=dtype, device=device))


def psc_filter(x: Tensor, tau_s: float = 3.0) -> Tensor:
    """a_t = (1 − 1/τ_s)·a_{t−1} + x_t/τ_s over the leading time axis of ``x`` [T, …] (a_{−1} = 0)."""
    kernel = psc_kernel(x.shape[0], tau_s, x.dtype, x.device)
    return (kernel @ x.reshape(x.shape[0], -1)).reshape(x.shape)


def _anticausal(g: Tensor, tau_s: float) -> Tensor:
    """G_t = Σ_{k≥0} ε[k]·g_{t+k}: how much a spike at t is worth to the loss (Kᵀ g)."""
    kernel = psc_kernel(g.shape[0], tau_s, g.dtype, g.device)
    return (kernel.T @ g.reshape(g.shape[0], -1)).reshape(g.shape)


def surrogate_slope(u: Tensor, threshold: float, width: float = SURROGATE_WIDTH) -> Tensor:
    """σ'(u) = e^x / (a(1 + e^x)²), x = (V_th − u)/a (paper file, Fallback), overflow-free."""
    sig = torch.sigmoid((u - threshold) / width)
    return sig * (1.0 - sig) / width


def lif_forward(current: Tensor, tau_m: float, tau_s: float, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Run the neuron: returns (u before reset, spikes s, PSC a), each [T, …] like ``current``."""
    leak, decay = 1.0 - 1.0 / tau_m, 1.0 - 1.0 / tau_s
    u_all, s_all, a_all = torch.empty_like(current), torch.empty_like(current), torch.empty_like(current)
    v = torch.zeros_like(current[0])
    a = torch.zeros_like(current[0])
    for t in range(current.shape[0]):
        u = leak * v + current[t]
        s = (u > threshold).to(current.dtype)
        v = u * (1.0 - s)
        a = decay * a + s / tau_s
        u_all[t], s_all[t], a_all[t] = u, s, a
    return u_all, s_all, a_all


def _recurrence(b: Tensor, a: Tensor) -> Tensor:
    """δ_t = B_t + A_t·δ_{t+1}, δ_T = 0, for t = T−1 … 0."""
    delta = torch.empty_like(b)
    carry = torch.zeros_like(b[0])
    for t in range(b.shape[0] - 1, -1, -1):
        carry = torch.addcmul(b[t], a[t], carry)
        delta[t] = carry
    return delta


def tssl_backward(grad_psc: Tensor, u: Tensor, spikes: Tensor, psc: Tensor, tau_m: float, tau_s: float,
                  threshold: float, fallback: bool = True) -> Tensor:
    """∂L/∂I from ∂L/∂a by TSSL-BP (paper file, Backward); pure function of the saved forward state."""
    big_g = _anticausal(grad_psc, tau_s)
    v_prev = torch.cat([torch.zeros_like(u[:1]), u[:-1] * (1.0 - spikes[:-1])])
    du = u - v_prev
    inv_du = torch.where(spikes > 0, (1.0 / du).clamp(0.0, INV_DU_MAX), torch.zeros_like(du))
    b = inv_du * big_g
    a = inv_du * u / tau_m + (1.0 - 1.0 / tau_m) * (1.0 - spikes)
    delta = _recurrence(b, a)
    if fallback:
        silent = psc < 1.0 / (4.0 * tau_s)
        delta = torch.where(silent, surrogate_slope(u, threshold) * big_g, delta)
    return delta


def surrogate_backward(grad_psc: Tensor, u: Tensor, spikes: Tensor, tau_m: float, tau_s: float,
                       threshold: float) -> Tensor:
    """∂L/∂I from ∂L/∂a by BPTT with the sigmoid surrogate σ' for ∂s/∂u (reset path included)."""
    big_g = _anticausal(grad_psc, tau_s)
    slope = surrogate_slope(u, threshold)
    leak = 1.0 - 1.0 / tau_m
    return _recurrence(slope * big_g, leak * ((1.0 - spikes) - slope * u))


class _LIF(torch.autograd.Function):
    """Forward: the LIF/PSC neuron; backward: TSSL-BP or surrogate BPTT (see module docstring)."""

    @staticmethod
    def forward(ctx, current: Tensor, tau_m: float, tau_s: float, threshold: float, rule: str,
                fallback: bool) -> tuple[Tensor, Tensor]:
        u, spikes, psc = lif_forward(current, tau_m, tau_s, threshold)
        ctx.save_for_backward(u, spikes, psc)
        ctx.params = (tau_m, tau_s, threshold, rule, fallback)
        ctx.mark_non_differentiable(spikes)
        return psc, spikes

    @staticmethod
    def backward(ctx, grad_psc: Tensor, grad_spikes: Tensor | None):  # noqa: ANN205
        u, spikes, psc = ctx.saved_tensors
        tau_m, tau_s, threshold, rule, fallback = ctx.params
        if rule == "tssl":
            grad = tssl_backward(grad_psc, u, spikes, psc, tau_m, tau_s, threshold, fallback)
        else:
            grad = surrogate_backward(grad_psc, u, spikes, tau_m, tau_s, threshold)
        return grad, None, None, None, None, None


def _check(current: Tensor, tau_m: float, tau_s: float, rule: str) -> None:
    if rule not in RULES:
        raise LeannetError(f"unknown learning rule '{rule}'; valid rules: {', '.join(RULES)}")
    if current.ndim < 1 or current.shape[0] < 1:
        raise LeannetError(f"lif_psc needs currents shaped [T, ...] with T >= 1, got shape {tuple(current.shape)}")
    if tau_m <= 1.0 or tau_s < 1.0:
        raise LeannetError(f"need tau_m > 1 and tau_s >= 1 (time constants in steps), got {tau_m}, {tau_s}")


def lif_psc_spikes(current: Tensor, tau_m: float = 5.0, tau_s: float = 3.0, threshold: float = 1.0,
                   rule: str = "tssl", fallback: bool = True) -> tuple[Tensor, Tensor]:
    """Like `lif_psc`, also returning the (non-differentiable) spike train [T, …]."""
    _check(current, tau_m, tau_s, rule)
    return _LIF.apply(current, float(tau_m), float(tau_s), float(threshold), rule, bool(fallback))


def lif_psc(current: Tensor, tau_m: float = 5.0, tau_s: float = 3.0, threshold: float = 1.0,
            rule: str = "tssl", fallback: bool = True) -> Tensor:
    """Post-synaptic currents [T, …] of LIF neurons driven by input ``current`` [T, …] (time-major).

    Differentiable with the chosen ``rule``: ``"tssl"`` (TSSL-BP; ``fallback`` uses the sigmoid
    surrogate where the neuron's PSC < 1/(4τ_s), as the released code does) or ``"surrogate"``
    (BPTT with a sigmoid surrogate on the same neuron). Paper file, Neuron and Backward.
    """
    return lif_psc_spikes(current, tau_m, tau_s, threshold, rule, fallback)[0]
