import pytest
import torch
from torch import nn

from leannet.models import build_model, count_parameters


def bn_parameters(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())


# Trainable BatchNorm parameters in Frankle et al. 2021 ("Training BatchNorm and Only BatchNorm"), W=16.
@pytest.mark.parametrize("name, expected", [("resnet14", 1_120), ("resnet56", 4_256), ("resnet110", 8_288)])
def test_bn_parameter_count_matches_bn_only_paper(name, expected):
    assert bn_parameters(build_model(name, 10)) == expected


def test_resnet20_parameter_count():
    # stem: conv 3*16*9 = 432, bn 32                                             ->     464
    # layer1: 3 blocks * (2 convs 16*16*9 + 2 bns 2*16) = 3 * 4_672             ->  14_016
    # layer2: block 1: 16*32*9 + 32*32*9 + 2*64 + shortcut 16*32 + 64 = 14_528
    #         blocks 2-3: 2 * (2*32*32*9 + 2*64) = 37_120                        ->  51_648
    # layer3: block 1: 32*64*9 + 64*64*9 + 2*128 + shortcut 32*64 + 128 = 57_728
    #         blocks 2-3: 2 * (2*64*64*9 + 2*128) = 147_968                      -> 205_696
    # fc: 64*10 + 10                                                             ->     650
    assert count_parameters(build_model("resnet20", 10)) == 272_474


def test_width_scales_every_stage():
    model = build_model("resnet8", 10, width=2)
    assert model.stem[0].out_channels == 32
    assert [model.layer1[0].conv2.out_channels, model.layer2[0].conv2.out_channels] == [32, 64]
    assert model.layer3[0].conv2.out_channels == 128
    assert model.fc.in_features == 128


def test_stage_names_for_hooks():
    names = dict(build_model("resnet8", 10).named_children())
    assert {"stem", "layer1", "layer2", "layer3", "fc"} <= set(names)
    names18 = dict(build_model("resnet18_cifar", 10, width=0.125).named_children())
    assert {"stem", "layer1", "layer2", "layer3", "layer4", "fc"} <= set(names18)


def test_shortcuts_are_1x1_conv_and_norm_only_where_shape_changes():
    model = build_model("resnet14", 10)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    for stage in (model.layer2, model.layer3):
        conv, norm = stage[0].shortcut
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(norm, nn.BatchNorm2d)
        assert isinstance(stage[1].shortcut, nn.Identity)


def test_resnet18_cifar_keeps_resolution_in_stem():
    model = build_model("resnet18_cifar", 100, width=0.125)
    assert model.stem[0].stride == (1, 1) and model.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_initialization():
    model = build_model("resnet8", 10)
    bn = model.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones(16)) and torch.equal(bn.bias, torch.zeros(16))
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * 3 * 3))
    w = build_model("resnet8", 10, width=4).layer3[0].conv2.weight
    assert w.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)


def test_smallest_input():
    assert build_model("resnet8", 10)(torch.randn(2, 3, 8, 8)).shape == (2, 10)
