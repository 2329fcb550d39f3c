"""RBN, TSSL-BP and BYOT give the same losses and gradients on CUDA as on the CPU (float32, TF32 off).

Tolerances, as the relative L2 error ‖cuda − cpu‖ / ‖cpu‖ of each tensor:
* `ELEMENTWISE` 1e-5 for the spiking neuron alone (elementwise operations and short loops over T: the
  devices differ only by rounding, and the spike trains must be identical);
* `NETWORK` 1e-4 for losses and gradients of whole networks (convolutions and matrix products sum in
  another order on the GPU; RBN runs on its C kernel on the CPU and on PyTorch operations on CUDA);
* `FLOAT64` 1e-9 for whole ResNets compared in float64. In float32 a ReLU input within rounding of 0 can take
  the other branch on one device, and that single flip moves every gradient below it by about 1e-3: on an
  H200 the RBN ResNet-8 step had one (scripts/cuda_parity_probe.py, results/gpu/h200_2026-12-04; the CPU's
  channels-last float32 step has the same flip). Float64 compares the arithmetic, not the branches.
"""

from __future__ import annotations

import copy

import pytest
import torch

from leannet.method import build_method
from leannet.models import build_model
from leannet.spiking.neurons import lif_psc_spikes

pytestmark = pytest.mark.cuda
ELEMENTWISE = 1e-5
NETWORK = 1e-4
FLOAT64 = 1e-9


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def step_both(method: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], device: str):
    """One forward and backward of `method` and of a copy on `device`: (cpu loss, device loss, both methods)."""
    other = copy.deepcopy(method).to(device)
    losses = []
    for m, (x, y) in ((method, batch), (other, tuple(t.to(device) for t in batch))):
        m.train()
        out = m((x, y))
        out["loss"].backward()
        losses.append(out["loss"])
    return losses, method, other


def assert_same_step(method: torch.nn.Module, batch, device: str, tolerance: float) -> None:
    (cpu_loss, dev_loss), cpu, dev = step_both(method, batch, device)
    assert relative_error(dev_loss, cpu_loss) < tolerance, (float(cpu_loss), float(dev_loss))
    grads = {name: p.grad for name, p in cpu.named_parameters() if p.grad is not None}
    assert grads
    for name, p in dev.named_parameters():
        if name in grads:
            err = relative_error(p.grad, grads[name])
            assert err < tolerance, f"{name}: relative gradient error {err:.2e} > {tolerance:g}"
    for (name, a), (_, b) in zip(cpu.named_buffers(), dev.named_buffers(), strict=True):
        if a.is_floating_point():  # running statistics updated by the step
            assert relative_error(b, a) < tolerance, name


def batch(shape=(16, 1, 28, 28), classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)


@pytest.mark.parametrize("norm", ["rbn", "bn"])
def test_rbn_resnet_step(norm, device):
    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10, in_channels=1, norm=norm, width=0.5)
    x, y = batch()
    assert_same_step(build_method({"name": "ce"}, model, 10).double(), (x.double(), y), device, FLOAT64)


def test_rbn_layer_forward_backward(device):
    from leannet.models.norms import make_norm

    torch.manual_seed(0)
    layer = make_norm("rbn", 8)
    x = (torch.randn(6, 8, 5, 5) * 3 + 1).requires_grad_()
    xd = x.detach().to(device).requires_grad_()
    other = copy.deepcopy(layer).to(device)
    y, yd = layer(x), other(xd)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (yd * w.to(device)).sum().backward()
    assert relative_error(yd, y) < NETWORK and relative_error(xd.grad, x.grad) < NETWORK
    for (name, p), (_, q) in zip(layer.named_parameters(), other.named_parameters(), strict=True):
        assert relative_error(q.grad, p.grad) < NETWORK, name


@pytest.mark.parametrize("rule", ["tssl", "surrogate"])
def test_tssl_neuron(rule, device):
    torch.manual_seed(0)
    current = torch.rand(5, 4096) * 1.6 - 0.2
    grad = torch.randn(5, 4096)
    results = []
    for dev in ("cpu", device):
        c = current.clone().to(dev).requires_grad_()  # a fresh leaf per device (.to("cpu") returns `current`)
        psc, spikes = lif_psc_spikes(c, rule=rule)
        (psc * grad.to(dev)).sum().backward()
        results.append((psc, spikes, c.grad))
    (psc, spikes, g), (psc_d, spikes_d, g_d) = results
    assert torch.equal(spikes_d.cpu(), spikes)
    assert relative_error(psc_d, psc) < ELEMENTWISE and relative_error(g_d, g) < ELEMENTWISE


@pytest.mark.parametrize("rule", ["tssl", "surrogate"])
def test_tssl_network_step(rule, device):
    torch.manual_seed(0)
    model = build_model("snn_64-32", num_classes=10, in_channels=1, norm="none", steps=5)
    method = build_method({"name": "snn_kernel", "rule": rule}, model, 10)
    x, y = batch()
    assert_same_step(method, (x.abs().clamp(max=1), y), device, NETWORK)


@pytest.mark.parametrize("target", ["ce", "tfkd_reg"])
def test_byot_step(target, device):
    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10, in_channels=1, norm="bn", width=0.5)
    method = build_method({"name": "byot", "target": target}, model, 10, input_shape=(1, 28, 28))
    assert_same_step(method, batch(), device, NETWORK)
