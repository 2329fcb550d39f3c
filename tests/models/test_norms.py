import pytest
import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.models import NORMS, make_norm, swap_batchnorm


def test_builtin_norms():
    assert isinstance(make_norm("bn", 8), nn.BatchNorm2d)
    assert isinstance(make_norm("none", 8), nn.Identity)
    with pytest.raises(LeannetError, match="valid norms"):
        make_norm("nope", 8)


def model_with_stats() -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3, momentum=0.2), nn.ReLU())
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        bn.running_var.fill_(5.0)
        bn.weight.fill_(0.5)
        bn.bias.fill_(-1.0)
    bn.num_batches_tracked.fill_(7)
    bn.bias.requires_grad_(False)
    return model.eval()


def test_swap_copies_stats_and_options(tagged_norm):
    norm, cls = tagged_norm
    model = model_with_stats()
    expected = model(torch.ones(1, 3, 5, 5))
    assert swap_batchnorm(model, norm) is model
    new = model[1]
    assert type(new) is cls
    assert new.running_mean.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert new.running_var.tolist() == [5.0] * 4
    assert new.weight.tolist() == [0.5] * 4 and new.bias.tolist() == [-1.0] * 4
    assert new.num_batches_tracked.item() == 7
    assert (new.eps, new.momentum, new.training) == (1e-3, 0.2, False)
    assert new.weight.requires_grad and not new.bias.requires_grad
    torch.testing.assert_close(model(torch.ones(1, 3, 5, 5)), expected)


def test_swap_passes_only_accepted_options():
    @NORMS.register("test_group")
    def group_norm(num_features, *, eps=1e-5, affine=True):
        return nn.GroupNorm(1, num_features, eps=eps, affine=affine)

    try:
        model = swap_batchnorm(model_with_stats(), "test_group")
    finally:
        NORMS._items.pop("test_group")
    assert isinstance(model[1], nn.GroupNorm) and model[1].eps == 1e-3
    assert model[1].weight.tolist() == [0.5] * 4


def test_swap_to_none_and_shared_layers():
    bn = nn.BatchNorm2d(4)
    model = nn.Sequential(nn.Sequential(bn), nn.Sequential(bn))
    swap_batchnorm(model, "none")
    assert isinstance(model[0][0], nn.Identity) and model[0][0] is model[1][0]


def test_swap_skips_layers_of_the_target_type(tagged_norm):
    norm, cls = tagged_norm
    model = swap_batchnorm(nn.Sequential(nn.BatchNorm2d(4)), norm)
    first = model[0]
    assert swap_batchnorm(model, norm)[0] is first
    assert swap_batchnorm(nn.BatchNorm2d(3), "none").__class__ is nn.Identity


def test_swap_keeps_timm_batchnorm_activation():
    from timm.layers import BatchNormAct2d

    model = swap_batchnorm(nn.Sequential(BatchNormAct2d(4, act_layer=nn.ReLU)), "none")
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(model(x), x.relu())
