import pytest
import torch
from torch import nn

from leannet.norm import RepresentativeBatchNorm2d
from leannet.norm.recalibrate import reestimate_bn, running_stat_layers


def stale_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    model[1].running_mean.fill_(5.0)  # statistics that describe some other network
    model[1].running_var.fill_(0.01)
    return model.eval()


def test_statistics_are_the_exact_average_over_batches():
    model = stale_model()
    batches = [torch.randn(8, 2, 4, 4) for _ in range(3)]
    assert reestimate_bn(model, iter(batches)) == 3
    with torch.no_grad():
        feats = [model[0](x) for x in batches]
    # cumulative mean of the per-batch mean and unbiased variance (PyTorch's momentum=None update)
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert not model.training and bn.momentum == 0.1  # mode and momentum restored


def test_weights_untouched_and_max_batches_respected():
    model = stale_model()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    used = reestimate_bn(model.train(), (torch.randn(4, 2, 4, 4) for _ in range(10)), max_batches=2)
    assert used == 2 and model.training and int(model[1].num_batches_tracked) == 2
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_no_batch_leaves_the_statistics_as_they_were():
    model = stale_model()
    assert reestimate_bn(model, []) == 0
    assert torch.all(model[1].running_mean == 5.0) and torch.all(model[1].running_var == 0.01)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(4), RepresentativeBatchNorm2d(4)])
def test_finds_every_layer_with_running_statistics(layer):
    model = nn.Sequential(layer, nn.LayerNorm(4), nn.BatchNorm2d(4, track_running_stats=False))
    assert running_stat_layers(model) == [layer]


def test_repairs_eval_mode_of_a_model_with_stale_statistics():
    torch.manual_seed(0)
    x = torch.randn(256, 2, 4, 4) * 3 + 1
    model = stale_model()
    with torch.no_grad():
        batch_mode = model.train()(x)
        stale = model.eval()(x)
        reestimate_bn(model, x.split(64))
        fixed = model.eval()(x)
    assert (fixed - batch_mode).abs().max() < 0.1 * (stale - batch_mode).abs().max()
