"""Spiking layers, spec-string models, the two losses and the spiking methods."""

from __future__ import annotations

import pytest
import torch

from leannet.errors import LeannetError
from leannet.models import build_model
from leannet.spiking import LIF, SpikingNet, SumPool2d, TimeDropout, count_loss, encode, kernel_loss, psc_filter
from leannet.spiking.layers import SpikingConv2d
from leannet.spiking.losses import target_train
from leannet.train.methods import build_method

D = torch.float64


def test_spec_models_shapes_and_readout():
    cnn = build_model("snn_32C5-P2-64C5-P2-1024", num_classes=10, in_channels=1, image_size=28)
    assert [m.conv.out_channels for m in cnn.layers if hasattr(m, "conv")] == [32, 64]
    assert cnn.layers[4].fc.in_features == 64 * 7 * 7 and cnn.layers[-1].fc.out_features == 10
    x = torch.randn(3, 1, 28, 28)
    series = cnn.forward_series(x)
    assert series.shape == (5, 3, 10)
    assert torch.allclose(cnn(x), series.sum(0))
    mlp = build_model("snn_400-D0.2-400", num_classes=7, in_channels=3, image_size=(8, 6),
                      steps=3, tau_m=8.0, tau_s=2.0)
    assert mlp.layers[0].fc.in_features == 3 * 8 * 6 and isinstance(mlp.layers[1], TimeDropout)
    assert mlp(torch.randn(2, 3, 8, 6)).shape == (2, 7)
    assert all(n.tau_m == 8.0 and n.tau_s == 2.0 for n in mlp.neurons())
    torch.manual_seed(0)
    plain = SpikingNet("16C3", 10).layers[0].conv.weight
    torch.manual_seed(0)
    scaled = SpikingNet("16C3", 10, conv_init_scale=5.0).layers[0].conv.weight
    assert torch.allclose(scaled, 5 * plain)  # the released code's CIFAR-10 weight_scale


def test_bad_specs_are_one_line_errors():
    with pytest.raises(LeannetError, match="bad spiking network spec"):
        SpikingNet("32X5", 10)
    with pytest.raises(LeannetError, match="after a linear layer"):
        SpikingNet("100-8C3", 10)
    with pytest.raises(LeannetError, match="valid encodings: analog, poisson"):
        SpikingNet("10", 10, encoding="rate")


def test_event_frames_input():
    net = SpikingNet("4C3-P2-16", 10, in_channels=2, image_size=34)
    frames = (torch.rand(2, 9, 2, 34, 34) < 0.2).float()
    assert net.forward_series(frames).shape == (9, 2, 10)


def test_encoding_pool_dropout():
    x = torch.rand(2, 1, 4, 4, dtype=D)
    analog = encode(x, 4, 3.0)
    assert torch.allclose(analog, psc_filter(x.expand(4, *x.shape), 3.0))
    spikes = encode(x, 50, 3.0, "poisson")
    assert spikes.shape == (50, 2, 1, 4, 4)
    pool = SumPool2d(2, 1.1)(torch.ones(3, 2, 1, 4, 4))
    assert pool.shape == (3, 2, 1, 2, 2) and torch.allclose(pool, torch.full_like(pool, 4.4))
    drop = TimeDropout(0.5).train()
    y = drop(torch.ones(6, 4, 32))
    assert (y == y[0]).all() and set(y.unique().tolist()) <= {0.0, 2.0}  # one mask for all steps
    assert torch.equal(drop.eval()(torch.ones(2, 3)), torch.ones(2, 3))
    z = torch.rand(2, 1, 1, 4, 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: SumPool2d(2)(v), (z,))


def test_kernel_loss_value_and_gradcheck():
    out = torch.rand(5, 2, 3, dtype=D, requires_grad=True)
    labels = torch.tensor([2, 0])
    desired = psc_filter(torch.tensor([0, 1, 0, 1, 1], dtype=D), 3.0)
    target = torch.zeros(5, 2, 3, dtype=D)
    target[:, 0, 2] = desired
    target[:, 1, 0] = desired
    assert torch.allclose(kernel_loss(out, labels), 0.5 * ((out - target) ** 2).sum())
    assert torch.autograd.gradcheck(lambda z: kernel_loss(z, labels, [0, 1, 1, 1, 1]), (out,))
    assert target_train(None, 7).tolist() == [0, 1, 0, 1, 1, 0, 1]
    with pytest.raises(LeannetError, match="0/1"):
        target_train([0, 2], 5)


def test_count_loss_is_one_sided():
    out = torch.zeros(4, 2, 3, dtype=D)
    out[:, 0, 0] = 5.0  # label 0 count 20 > desired 15: not penalised
    out[:, 0, 1] = 0.5  # non-label count 2 < undesired 3: not penalised
    out[:, 0, 2] = 1.0  # non-label count 4 > 3: e = 1/4
    out[:, 1, 1] = 2.0  # label 1 count 8 < 15: e = -7/4
    loss = count_loss(out, torch.tensor([0, 1]), desired=15.0, undesired=3.0)
    assert loss.item() == pytest.approx(0.5 * ((1 / 4) ** 2 + (7 / 4) ** 2))
    z = (torch.rand(4, 2, 3, dtype=D) * 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: count_loss(v, torch.tensor([0, 1]), 6.0, 3.0), (z,))


def test_methods_rules_fallback_warmup_clamp_and_stats():
    model = build_model("snn_20", num_classes=4, in_channels=1, image_size=6)
    method = build_method({"name": "snn_kernel", "rule": "surrogate", "fallback": "warmup",
                           "fallback_warmup_steps": 2, "weight_clamp": 0.05}, model, 4)
    assert all(n.rule == "surrogate" for n in model.neurons())
    x, y = torch.randn(8, 1, 6, 6) * 3, torch.randint(0, 4, (8,))
    out = method((x, y))
    assert out["logits"].shape == (8, 4) and out["loss"].requires_grad
    assert {"firing_rate", "silent_fraction", "rate/0", "silent/1"} <= set(out)
    assert 0 <= out["silent_fraction"] <= 1
    assert all(n.fallback for n in model.neurons())
    method.after_step()
    method.after_step()
    method((x, y))
    assert not any(n.fallback for n in model.neurons())  # warm-up over
    assert all(p.abs().max() <= 0.05 for p in model.parameters())
    assert int(method.state_dict()["steps_done"]) == 2
    with pytest.raises(LeannetError, match="valid: always, warmup, never"):
        build_method({"name": "snn_count", "fallback": "sometimes"}, model, 4)
    with pytest.raises(LeannetError, match="need a spiking model"):
        build_method({"name": "snn_count"}, torch.nn.Linear(3, 4), 4)


def test_lif_records_spikes():
    lif = LIF()
    lif.record_spikes = True
    lif(torch.full((5, 2), 0.6))
    assert lif.last_spikes.tolist() == [[0, 0], [1, 1], [0, 0], [1, 1], [0, 0]]
    assert lif.firing_rate.item() == pytest.approx(0.4) and lif.silent_fraction.item() == 0.0


@pytest.mark.parametrize("loss", [kernel_loss, count_loss])
@pytest.mark.parametrize("label", [-1, 4, 7])
def test_labels_outside_the_classes_are_one_line_errors(loss, label):
    """A label −1 indexed the last class (and ≥ K raised an IndexError): now the labels are checked."""
    out = torch.rand(5, 3, 4)
    with pytest.raises(LeannetError, match=rf"labels must be in 0\.\.3 \(4 output classes\), got {label}"):
        loss(out, torch.tensor([0, label, 1]))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # the reference below
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_spiking_conv_keeps_the_size_for_every_kernel(k):
    """'same' padding for even kernels too (one more zero row and column at the bottom and right)."""
    layer = SpikingConv2d(2, 3, k)
    x = torch.rand(4, 2, 2, 7, 9)  # T, B, C, H, W
    assert layer(x).shape == (4, 2, 3, 7, 9)
    if k % 2 == 0:  # the same as PyTorch's asymmetric padding='same'
        same = torch.nn.functional.conv2d(x[0], layer.conv.weight, padding="same")
        torch.testing.assert_close(layer.conv(torch.nn.functional.pad(x[0], layer.pad)), same)
