import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leannet.errors import LeannetError
from leannet.models import build_model
from leannet.norm import RepresentativeBatchNorm2d, SyncRepresentativeBatchNorm2d, convert_norm


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def with_running_stats(model: nn.Module) -> nn.Module:
    """Give every BN non-trivial running statistics and affine parameters, then switch to eval."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


def rbn_layers(model):
    return [m for m in model.modules() if isinstance(m, RepresentativeBatchNorm2d)]


def overfit(model, steps=6):
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["tv:resnet18", "timm:mobilenetv3_small_050"])
def test_convert_any_model_and_back(name):
    model = with_running_stats(build_model(name, 10, in_channels=1))
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    gammas = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
    assert convert_norm(model, "rbn", keep_output=True) is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(rbn_layers(model)) == bns > 10
    for gamma, layer in zip(gammas, rbn_layers(model), strict=True):
        torch.testing.assert_close(layer.weight * torch.sigmoid(torch.tensor(1.0)), gamma)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)  # same function, now RBN
        for layer in rbn_layers(model):  # a learned-looking calibration
            layer.scale_bias.uniform_(-1, 2)
        with_rbn = model(x)
    assert with_rbn.isfinite().all() and not torch.allclose(with_rbn, expected, atol=1e-3)
    # back to BN: exact while w_m = w_v = 0 (sigmoid(w_b) folds into γ)
    convert_norm(model, "bn")
    assert not rbn_layers(model) and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bns
    with torch.no_grad():
        torch.testing.assert_close(model(x), with_rbn, rtol=1e-4, atol=1e-5)


def test_default_conversion_copies_gamma_and_statistics():
    model = with_running_stats(build_model("tv:resnet18", 10, in_channels=1))
    bn = model.layer2[0].bn1
    convert_norm(model, "rbn")
    rbn = model.layer2[0].bn1
    assert type(rbn) is RepresentativeBatchNorm2d and rbn.scale_bias.tolist() == [1.0] * bn.num_features
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(rbn, key), getattr(bn, key)), key


def test_converted_model_trains_and_calibration_learns():
    model = convert_norm(build_model("tv:resnet18", 10, in_channels=1), "rbn")
    losses = overfit(model)
    assert losses[-1] < 0.5 * losses[0]
    for layer in rbn_layers(model):
        assert layer.center_weight.grad.abs().sum() > 0 and layer.scale_weight.grad.abs().sum() > 0
    assert any(layer.scale_weight.detach().abs().max() > 0 for layer in rbn_layers(model))


def test_back_to_bn_refuses_to_drop_a_learned_calibration():
    model = convert_norm(nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)), "rbn")
    with torch.no_grad():
        model[1].center_weight[0] = 0.3
    with pytest.raises(LeannetError, match="strict=False"):
        convert_norm(model, "bn")
    assert isinstance(convert_norm(model, "bn", strict=False)[1], nn.BatchNorm2d)


def test_sync_conversion_keeps_the_calibration():
    layer = RepresentativeBatchNorm2d(3, momentum=0.2)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    layer.scale_bias.requires_grad_(False)
    synced = convert_norm(nn.Sequential(layer), "rbn_sync")[0]
    assert type(synced) is SyncRepresentativeBatchNorm2d and synced.momentum == 0.2
    for key, value in layer.state_dict().items():
        assert torch.equal(synced.state_dict()[key], value), key
    assert not synced.scale_bias.requires_grad
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(synced(x), layer(x))  # no process group: same as RBN
    assert type(convert_norm(nn.Sequential(synced), "rbn")[0]) is RepresentativeBatchNorm2d
    # torch's own SyncBatchNorm conversion leaves RBN alone instead of dropping its calibration
    assert nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(layer))[0] is layer


def test_unknown_norm_lists_valid_ones():
    with pytest.raises(LeannetError, match="valid norms: bn, none, rbn"):
        convert_norm(nn.BatchNorm2d(2), "rbm")
