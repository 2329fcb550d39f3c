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
    """G_t = Σ_{k≥0} ε[k]·g_{t+k} = (1 − 1/τ_s)·G_{t+1} + g_t/τ_s: how much a spike at t is worth (Kᵀ g)."""
    big_g = torch.empty_like(g)
    torch.mul(g[-1], 1.0 / tau_s, out=big_g[-1])
    for t in range(g.shape[0] - 2, -1, -1):
        torch.lerp(big_g[t + 1], g[t], 1.0 / tau_s, out=big_g[t])
    return big_g


def surrogate_slope(u: Tensor, threshold: float, width: float = SURROGATE_WIDTH) -> Tensor:
    """σ'(u) = e^x / (a(1 + e^x)²), x = (V_th − u)/a (paper file, Fallback), overflow-free."""
    sig = torch.sigmoid((u - threshold) / width)
    return sig * (1.0 - sig) / width


def _slope_into(out: Tensor, u: Tensor, threshold: float, width: float = SURROGATE_WIDTH) -> Tensor:
    """Write σ'(u) into ``out`` in place (the same values as `surrogate_slope`, no new memory)."""
    torch.sub(u, threshold, out=out).mul_(1.0 / width).sigmoid_()
    return out.addcmul_(out, out, value=-1.0).mul_(1.0 / width)


def lif_forward(current: Tensor, tau_m: float, tau_s: float, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Run the neuron: returns (u before reset, spikes s as 0/1, PSC a), each [T, …] like ``current``.

    Four fused tensor operations per step into preallocated memory (large fresh allocations cost
    page faults on CPU); the loop over T is the only Python loop.
    """
    leak = 1.0 - 1.0 / tau_m
    u_all, s_all, a_all = torch.empty_like(current), torch.empty_like(current), torch.empty_like(current)
    v = torch.empty_like(current[0])
    for t in range(current.shape[0]):
        if t == 0:
            u_all[0].copy_(current[0])
        else:
            torch.add(current[t], v, alpha=leak, out=u_all[t])  # u_t = (1 − 1/τ_m)·v_{t−1} + I_t
        torch.gt(u_all[t], threshold, out=s_all[t])
        torch.addcmul(u_all[t], u_all[t], s_all[t], value=-1.0, out=v)  # hard reset: v_t = u_t·(1 − s_t)
        if t == 0:
            torch.mul(s_all[0], 1.0 / tau_s, out=a_all[0])
        else:
            torch.lerp(a_all[t - 1], s_all[t], 1.0 / tau_s, out=a_all[t])  # a_t = (1−1/τ_s)a_{t−1} + s_t/τ_s
    return u_all, s_all, a_all


def _recurrence_(b: Tensor, a: Tensor) -> Tensor:
    """δ_t = B_t + A_t·δ_{t+1}, δ_T = 0, for t = T−1 … 0, computed in place in ``b`` (returned)."""
    for t in range(b.shape[0] - 2, -1, -1):
        b[t].addcmul_(a[t], b[t + 1])
    return b


def tssl_backward(grad_psc: Tensor, u: Tensor, spikes: Tensor, silent: Tensor | None, tau_m: float, tau_s: float,
                  threshold: float) -> Tensor:
    """∂L/∂I from ∂L/∂a by TSSL-BP (paper file, Backward); pure function of the saved forward state.

    ``silent``: where the fallback applies (PSC < 1/(4τ_s)), or None for no fallback.
    """
    big_g = _anticausal(grad_psc, tau_s)
    inv_du = torch.empty_like(u)  # Δu_t = u_t − v_{t−1} = u_t − u_{t−1} + u_{t−1}·s_{t−1}
    inv_du[0].copy_(u[0])
    torch.sub(u[1:], u[:-1], out=inv_du[1:])
    inv_du[1:].addcmul_(u[:-1], spikes[:-1])
    # s/max(Δu, 1/8) = min(1/Δu, 8) at spikes (Δu > 0 there since V_th > 0), 0 elsewhere
    inv_du.clamp_(min=1.0 / INV_DU_MAX).reciprocal_().mul_(spikes)
    leak = 1.0 - 1.0 / tau_m
    a = torch.mul(spikes, -leak).add_(leak).addcmul_(inv_du, u, value=1.0 / tau_m)  # intra-neuron carry
    delta = _recurrence_(inv_du.mul_(big_g), a)  # B = G/Δu: inter-neuron term
    if silent is not None:
        fallback = _slope_into(a, u, threshold).mul_(big_g)
        torch.where(silent, fallback, delta, out=delta)
    return delta


def surrogate_backward(grad_psc: Tensor, u: Tensor, spikes: Tensor, tau_m: float, tau_s: float,
                       threshold: float) -> Tensor:
    """∂L/∂I from ∂L/∂a by BPTT with the sigmoid surrogate σ' for ∂s/∂u (reset path included)."""
    big_g = _anticausal(grad_psc, tau_s)
    slope = _slope_into(torch.empty_like(u), u, threshold)
    leak = 1.0 - 1.0 / tau_m
    a = torch.mul(spikes, -leak).add_(leak).addcmul_(slope, u, value=-leak)  # λ((1 − s) − σ'u)
    return _recurrence_(slope.mul_(big_g), a)


class _LIF(torch.autograd.Function):
    """Forward: the LIF/PSC neuron; backward: TSSL-BP or surrogate BPTT (see module docstring)."""

    @staticmethod
    def forward(ctx, current: Tensor, tau_m: float, tau_s: float, threshold: float, rule: str,
                fallback: bool) -> tuple[Tensor, Tensor]:
        u, spikes, psc = lif_forward(current, tau_m, tau_s, threshold)
        silent = psc < 1.0 / (4.0 * tau_s) if rule == "tssl" and fallback else None
        ctx.save_for_backward(u, spikes, silent)
        ctx.params = (tau_m, tau_s, threshold, rule)
        ctx.mark_non_differentiable(spikes)
        return psc, spikes

    @staticmethod
    def backward(ctx, grad_psc: Tensor, grad_spikes: Tensor | None):  # noqa: ANN205
        u, spikes, silent = ctx.saved_tensors
        tau_m, tau_s, threshold, rule = ctx.params
        if rule == "tssl":
            grad = tssl_backward(grad_psc, u, spikes, silent, tau_m, tau_s, threshold)
        else:
            grad = surrogate_backward(grad_psc, u, spikes, tau_m, tau_s, threshold)
        return grad, None, None, None, None, None


def _check(current: Tensor, tau_m: float, tau_s: float, threshold: float, rule: str) -> None:
    if rule not in RULES:
        raise LeannetError(f"unknown learning rule '{rule}'; valid rules: {', '.join(RULES)}")
    if current.ndim < 1 or current.shape[0] < 1:
        raise LeannetError(f"lif_psc needs currents shaped [T, ...] with T >= 1, got shape {tuple(current.shape)}")
    if tau_m <= 1.0 or tau_s < 1.0:
        raise LeannetError(f"need tau_m > 1 and tau_s >= 1 (time constants in steps), got {tau_m}, {tau_s}")
    if threshold <= 0:
        raise LeannetError(f"the firing threshold must be > 0, got {threshold}")


def lif_psc_spikes(current: Tensor, tau_m: float = 5.0, tau_s: float = 3.0, threshold: float = 1.0,
                   rule: str = "tssl", fallback: bool = True) -> tuple[Tensor, Tensor]:
    """Like `lif_psc`, also returning the (non-differentiable) spike train [T, …]."""
    _check(current, tau_m, tau_s, threshold, rule)
    if current.dtype in (torch.float16, torch.bfloat16):  # mixed precision: the neuron itself runs in float32
        with torch.autocast(current.device.type, enabled=False):
            psc, spikes = _LIF.apply(current.float(), float(tau_m), float(tau_s), float(threshold), rule,
                                     bool(fallback))
        return psc.to(current.dtype), spikes.to(current.dtype)
    return _LIF.apply(current, float(tau_m), float(tau_s), float(threshold), rule, bool(fallback))


def lif_psc(current: Tensor, tau_m: float = 5.0, tau_s: float = 3.0, threshold: float = 1.0,
            rule: str = "tssl", fallback: bool = True) -> Tensor:
    """Post-synaptic currents [T, …] of LIF neurons driven by input ``current`` [T, …] (time-major).

    Differentiable with the chosen ``rule``: ``"tssl"`` (TSSL-BP; ``fallback`` uses the sigmoid
    surrogate where the neuron's PSC < 1/(4τ_s), as the released code does) or ``"surrogate"``
    (BPTT with a sigmoid surrogate on the same neuron). Paper file, Neuron and Backward. Half-precision
    currents (mixed precision) are integrated in float32: the threshold test and 1/Δu need its precision.
    """
    return lif_psc_spikes(current, tau_m, tau_s, threshold, rule, fallback)[0]
