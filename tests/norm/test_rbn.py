import math

import pytest
import torch
from torch import nn

from leannet.models import build_model, count_parameters, make_norm
from leannet.norm import RepresentativeBatchNorm2d, rbn_steps
from leannet.norm.rbn import InstanceMoments


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def golden_layer(**kwargs) -> RepresentativeBatchNorm2d:
    layer = RepresentativeBatchNorm2d(1, eps=1.5, **kwargs).double()
    with torch.no_grad():
        layer.center_weight.fill_(0.5)
        layer.scale_weight.fill_(2.0)
        layer.scale_bias.fill_(-1.0)
        layer.weight.fill_(1.5)
        layer.bias.fill_(0.25)
    return layer


# two instances, one channel, 1×2 pixels: instance means 2 and 4
X = torch.tensor([[[[1.0, 3.0]]], [[[2.0, 6.0]]]], dtype=torch.float64)


def test_training_forward_matches_hand_computation():
    # X_cm = X + 0.5·K(X) = [2, 4], [4, 8]; μ = 4.5; σ² = (6.25 + 0.25 + 0.25 + 12.25) / 4 = 4.75
    # sqrt(σ² + ε) = sqrt(6.25) = 2.5 -> X_s = [-1, -0.2], [-0.2, 1.4]; K(X_s) = -0.6, 0.6
    layer = golden_layer().train()
    gate = [sigmoid(2.0 * -0.6 - 1.0), sigmoid(2.0 * 0.6 - 1.0)]
    expected = [[1.5 * gate[0] * -1.0 + 0.25, 1.5 * gate[0] * -0.2 + 0.25],
                [1.5 * gate[1] * -0.2 + 0.25, 1.5 * gate[1] * 1.4 + 0.25]]
    out = layer(X)
    torch.testing.assert_close(out.reshape(2, 2), torch.tensor(expected, dtype=torch.float64))
    # running statistics of X_cm, momentum 0.1, unbiased variance (4 values)
    assert layer.running_mean.item() == pytest.approx(0.1 * 4.5)
    assert layer.running_var.item() == pytest.approx(0.9 + 0.1 * 4.75 * 4 / 3)
    assert layer.num_batches_tracked.item() == 1


def test_eval_forward_matches_hand_computation():
    # running mean 1, var 2.5 (+ ε 1.5 = 4): instance 0: X_cm = [2, 4] -> X_s = [0.5, 1.5], K = 1
    layer = golden_layer().eval()
    layer.running_mean.fill_(1.0)
    layer.running_var.fill_(2.5)
    gate = sigmoid(2.0 * 1.0 - 1.0)
    out = layer(X[:1])
    torch.testing.assert_close(out.reshape(2), torch.tensor([1.5 * gate * 0.5 + 0.25, 1.5 * gate * 1.5 + 0.25],
                                                            dtype=torch.float64))
    assert layer.running_mean.item() == 1.0  # eval never updates


def random_layer(channels=3, **kwargs) -> RepresentativeBatchNorm2d:
    torch.manual_seed(0)
    layer = RepresentativeBatchNorm2d(channels, **kwargs).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
        if layer.running_mean is not None:
            layer.running_mean.copy_(torch.randn(channels))
            layer.running_var.copy_(torch.rand(channels) + 0.5)
    return layer


@pytest.mark.parametrize("training", [True, False])
def test_fused_forward_equals_the_four_steps(training):
    layer = random_layer().train(training)
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64) * 3 + 1
    reference = rbn_steps(layer, x)
    torch.testing.assert_close(layer(x), reference["output"])
    if training:  # running statistics are those of the centered input X_cm
        var, mean = torch.var_mean(reference["centered"], dim=(0, 2, 3), correction=1)
        layer2 = random_layer()
        torch.testing.assert_close(layer.running_mean, 0.9 * layer2.running_mean + 0.1 * mean)
        torch.testing.assert_close(layer.running_var, 0.9 * layer2.running_var + 0.1 * var)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_float64(training):
    layer = random_layer(2).train(training)
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(3, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_instance_moments_gradcheck_and_precision():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(InstanceMoments.apply, (x,))
    assert torch.autograd.gradgradcheck(InstanceMoments.apply, (x,))
    far = torch.randn(2, 3, 28, 28) + 1000.0  # mean far from 0: no cancellation in float32
    mean, var = InstanceMoments.apply(far)
    ref_var, ref_mean = torch.var_mean(far.double(), dim=(2, 3), correction=0)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-4, atol=0)
    torch.testing.assert_close(mean.double(), ref_mean)


def test_eval_output_does_not_depend_on_batch_mates():
    layer = random_layer().eval()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    alone = torch.cat([layer(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(layer(x), alone)
    other = x.clone()
    other[1:] = torch.randn(4, 3, 4, 4, dtype=torch.float64) * 10
    torch.testing.assert_close(layer(other)[0], layer(x)[0])


def test_input_is_never_modified():
    layer = random_layer()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    copy = x.clone()
    for training in (True, False):
        layer.train(training)(x)
        assert torch.equal(x, copy)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_drop_in_for_batchnorm(momentum):
    """With w_m = w_v = 0, RBN = sigmoid(w_b)·BN; running statistics evolve exactly as BN's."""
    bn = nn.BatchNorm2d(4, momentum=momentum)
    rbn = RepresentativeBatchNorm2d(4, momentum=momentum)
    assert set(bn.state_dict()) < set(rbn.state_dict())
    assert {n: p.shape for n, p in rbn.named_parameters()} == {
        n: (4,) for n in ("weight", "bias", "center_weight", "scale_weight", "scale_bias")}
    assert rbn.scale_bias.tolist() == [1.0] * 4 and not rbn.center_weight.any() and not rbn.scale_weight.any()
    for _ in range(3):
        x = torch.randn(6, 4, 5, 5) * 2 + 3
        torch.testing.assert_close(rbn(x), sigmoid(1.0) * bn(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rbn.running_mean, bn.running_mean)
    torch.testing.assert_close(rbn.running_var, bn.running_var)
    assert rbn.num_batches_tracked == bn.num_batches_tracked == 3
    rbn.eval(), bn.eval()
    torch.testing.assert_close(rbn(x), sigmoid(1.0) * bn(x), rtol=1e-5, atol=1e-5)


def test_without_running_stats_uses_batch_statistics_in_eval():
    layer = random_layer(track_running_stats=False)
    assert layer.running_mean is None and layer.num_batches_tracked is None
    x = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(layer.eval()(x), layer.train()(x))
    with pytest.raises(ValueError, match="more than 1 value"):
        layer.train()(x[:1, :, :1, :1])
    with pytest.raises(ValueError, match="4D"):
        layer(x[0])


def test_channels_last_and_low_precision():
    layer = random_layer().float()
    x = torch.randn(4, 3, 6, 6)
    expected = layer(x)
    out = layer(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
    half = layer(x.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected, rtol=0.05, atol=0.05)


def test_torch_compile_matches_eager():
    eager = random_layer().float()
    compiled = random_layer().float()
    compiled.compile(backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.testing.assert_close(compiled(x2), eager(x))
    compiled(x2).square().sum().backward()
    eager(x).square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    torch.testing.assert_close(compiled.center_weight.grad, eager.center_weight.grad)
    torch.testing.assert_close(compiled.running_var, eager.running_var)


def test_registered_norm_in_leannet_models():
    assert type(make_norm("rbn", 8)) is RepresentativeBatchNorm2d
    bn = build_model("resnet8", 10, in_channels=1, width=0.5)
    rbn = build_model("resnet8", 10, in_channels=1, width=0.5, norm="rbn")
    channels = sum(m.num_features for m in rbn.modules() if isinstance(m, RepresentativeBatchNorm2d))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rbn.modules())
    assert count_parameters(rbn) == count_parameters(bn) + 3 * channels
    assert rbn(torch.randn(2, 1, 28, 28)).shape == (2, 10)
