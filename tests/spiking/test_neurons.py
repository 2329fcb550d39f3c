"""The LIF/PSC neuron: the paper file's worked example, TSSL-BP against a slow reference, BPTT."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from leannet.errors import LeannetError
from leannet.spiking import lif_psc, lif_psc_spikes, psc_filter
from leannet.spiking.neurons import lif_forward, psc_kernel

D = torch.float64


def test_worked_example_exact():
    """τ_m 5, τ_s 3, T 5, I = 0.6: u = 0.6, 1.08, 0.6, 1.08, 0.6; PSC 0, .333, .222, .481, .321."""
    current = torch.full((5,), 0.6, dtype=D)
    u, s, _ = lif_forward(current, 5.0, 3.0, 1.0)
    psc, spikes = lif_psc_spikes(current)
    assert spikes.tolist() == s.tolist() == [0, 1, 0, 1, 0]
    assert torch.allclose(u, torch.tensor([0.6, 1.08, 0.6, 1.08, 0.6], dtype=D), rtol=0, atol=1e-15)
    exact = [Fraction(0), Fraction(1, 3), Fraction(2, 9), Fraction(2, 27) * 2 + Fraction(1, 3), Fraction(26, 81)]
    assert torch.allclose(psc, torch.tensor([float(f) for f in exact], dtype=D), rtol=0, atol=1e-15)
    assert [round(v, 3) for v in psc.tolist()] == [0.0, 0.333, 0.222, 0.481, 0.321]
    assert torch.equal(lif_psc(current), psc)


def test_shapes_and_errors():
    x = torch.rand(3, 2, 4, 5)
    assert lif_psc(x).shape == x.shape
    assert lif_psc(torch.full((1, 7), 2.0)).eq(1 / 3).all()  # T = 1: spike at once, PSC 1/τ_s
    with pytest.raises(LeannetError, match="valid rules: tssl, surrogate"):
        lif_psc(x, rule="stdp")
    with pytest.raises(LeannetError, match=r"\[T, \.\.\.\]"):
        lif_psc(torch.tensor(1.0))


def test_psc_filter_matches_recursion_and_gradcheck():
    x = torch.randn(6, 3, dtype=D, requires_grad=True)
    a, ref = torch.zeros(3, dtype=D), []
    for t in range(6):
        a = (1 - 1 / 3) * a + x[t] / 3
        ref.append(a)
    assert torch.allclose(psc_filter(x, 3.0), torch.stack(ref))
    assert torch.autograd.gradcheck(lambda z: psc_filter(z, 2.5), (x,))
    assert psc_kernel(4, 3.0)[0, 1] == 0  # causal


# ---------------------------------------------------------------- slow reference, from the equations
def _sigma_prime(u: float, threshold: float, a: float = 0.2) -> float:
    x = (threshold - u) / a
    return math.exp(x) / (a * (1 + math.exp(x)) ** 2) if x < 700 else 0.0


def slow_tssl(current: torch.Tensor, grad: torch.Tensor, tau_m: float, tau_s: float, threshold: float,
              fallback: bool) -> torch.Tensor:
    """∂L/∂I per neuron with Python floats, written from the paper file's Backward section."""
    steps = current.shape[0]
    flat_i, flat_g = current.reshape(steps, -1), grad.reshape(steps, -1)
    out = torch.zeros_like(flat_i)
    eps = [(1 / tau_s) * (1 - 1 / tau_s) ** k for k in range(steps)]
    for n in range(flat_i.shape[1]):
        cur, g = flat_i[:, n].tolist(), flat_g[:, n].tolist()
        u_pre, du, spk, psc = [], [], [], []
        v, a = 0.0, 0.0
        for t in range(steps):
            u = (1 - 1 / tau_m) * v + cur[t]
            du.append(u - v)
            s = 1.0 if u > threshold else 0.0
            u_pre.append(u)
            spk.append(s)
            v = 0.0 if s else u
            a = (1 - 1 / tau_s) * a + s / tau_s
            psc.append(a)
        theta = None
        for t in range(steps - 1, -1, -1):
            future = sum(eps[k] * g[t + k] for k in range(steps - t))
            dtf_du = min(max(-1 / du[t], -8.0), 0.0) if spk[t] else 0.0  # ∂t_f/∂u ≈ −1/Δu, clamped
            delta = -dtf_du * future  # inter-neuron
            if theta is not None:  # intra-neuron: leak through silent steps, reset-time shift at a spike
                delta += theta * (1 - 1 / tau_m) * (1 - spk[t])
                delta += spk[t] * theta * (-u_pre[t] / tau_m) * dtf_du
            theta = delta if spk[t] else (0.0 if theta is None else theta * (1 - 1 / tau_m))
            if fallback and psc[t] < 1 / (4 * tau_s):
                delta = _sigma_prime(u_pre[t], threshold) * future
            out[t, n] = delta
    return out.reshape(current.shape)


def _case(seed: int, steps: int = 6, shape: tuple[int, ...] = (5, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    current = (torch.rand(steps, *shape, generator=gen, dtype=D) * 1.4 - 0.1)
    grad = torch.randn(steps, *shape, generator=gen, dtype=D)
    return current, grad


@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize(("seed", "steps", "tau_m", "tau_s", "threshold"),
                         [(0, 6, 5.0, 3.0, 1.0), (1, 5, 8.0, 2.0, 1.0), (2, 9, 5.0, 3.0, 0.7), (3, 1, 5.0, 3.0, 1.0)])
def test_tssl_backward_matches_slow_reference(fallback, seed, steps, tau_m, tau_s, threshold):
    current, grad = _case(seed, steps)
    x = current.clone().requires_grad_(True)
    psc, spikes = lif_psc_spikes(x, tau_m, tau_s, threshold, rule="tssl", fallback=fallback)
    (psc * grad).sum().backward()
    expected = slow_tssl(current, grad, tau_m, tau_s, threshold, fallback)
    assert torch.allclose(x.grad, expected, rtol=1e-12, atol=1e-12)
    if steps > 1:  # the case exercises spikes, silent neurons and the fallback region
        assert 0 < spikes.mean() < 0.5
        silent = psc.detach() < 1 / (4 * tau_s)
        assert silent.any() and (~silent).any()


def test_tssl_differs_from_surrogate_and_fallback_matters():
    current, grad = _case(4)
    grads = {}
    for rule, fallback in (("tssl", True), ("tssl", False), ("surrogate", True)):
        x = current.clone().requires_grad_(True)
        (lif_psc(x, rule=rule, fallback=fallback) * grad).sum().backward()
        grads[rule, fallback] = x.grad
    assert not torch.allclose(grads["tssl", True], grads["tssl", False])
    assert not torch.allclose(grads["tssl", True], grads["surrogate", True])


# ------------------------------------------------------------------ surrogate BPTT vs plain autograd
def unrolled_surrogate(current: torch.Tensor, tau_m: float, tau_s: float, threshold: float) -> torch.Tensor:
    """The same neuron unrolled in autograd, spikes straight-through with a sigmoid(·/0.2) derivative."""
    v = torch.zeros_like(current[0])
    a = torch.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        u = (1 - 1 / tau_m) * v + current[t]
        soft = torch.sigmoid((u - threshold) / 0.2)
        s = soft + ((u > threshold).to(u.dtype) - soft).detach()
        v = u * (1 - s)
        a = (1 - 1 / tau_s) * a + s / tau_s
        out.append(a)
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 5])
def test_surrogate_backward_is_bptt(seed):
    current, grad = _case(seed, steps=7)
    x1 = current.clone().requires_grad_(True)
    x2 = current.clone().requires_grad_(True)
    out1 = lif_psc(x1, 5.0, 3.0, 1.0, rule="surrogate")
    out2 = unrolled_surrogate(x2, 5.0, 3.0, 1.0)
    assert torch.allclose(out1, out2.detach(), rtol=0, atol=1e-14)
    (out1 * grad).sum().backward()
    (out2 * grad).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck_of_the_smooth_parts():
    """The learning-rule gradients are not derivatives of the step-function forward (gradcheck does
    not apply); the surrogate's own σ' is: check it against finite differences of the sigmoid."""
    from leannet.spiking.neurons import surrogate_slope

    u = torch.linspace(-1, 3, 41, dtype=D, requires_grad=True)
    soft = torch.sigmoid((u - 1.0) / 0.2)
    (slope,) = torch.autograd.grad(soft.sum(), u)
    assert torch.allclose(surrogate_slope(u.detach(), 1.0), slope)
    assert torch.autograd.gradcheck(lambda z: torch.sigmoid((z - 1.0) / 0.2), (u,))
