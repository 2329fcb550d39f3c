import pytest
import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.models import MODELS, build_model, count_parameters

# Every leannet model (tests elsewhere may register more) and its number of norm layers.
# A CIFAR ResNet-D has a stem norm, two per block and two shortcut norms: D + 1.
NORM_POSITIONS = {
    **{f"resnet{d}": d + 1 for d in (8, 14, 20, 32, 44, 56, 110)},
    "cifar_resnet": 21,  # depth 20 by default
    "resnet18_cifar": 1 + 8 * 2 + 3,
    "vgg_small": 6,
    "mlp": 0,
}


def test_every_model_is_registered():
    assert set(NORM_POSITIONS) <= set(MODELS.names())


@pytest.mark.parametrize("name", NORM_POSITIONS)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_output_shape(name, in_channels, size):
    model = build_model(name, num_classes=7, in_channels=in_channels, image_size=size)
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", NORM_POSITIONS)
def test_norm_none_has_no_batchnorm(name):
    model = build_model(name, 10, norm="none")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", NORM_POSITIONS)
def test_registered_norm_is_used_in_every_norm_position(name, tagged_norm):
    norm, cls = tagged_norm
    model = build_model(name, 10, norm=norm)
    assert sum(type(m) is cls for m in model.modules()) == NORM_POSITIONS[name]
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())


@pytest.mark.parametrize("name, kwargs", [("resnet26", {}), ("cifar_resnet", {"depth": 26})])
def test_any_valid_depth(name, kwargs):
    model = build_model(name, 10, **kwargs)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [4, 4, 4]


def test_named_depths_do_not_take_a_depth():
    with pytest.raises(LeannetError, match="depth"):
        build_model("resnet20", 10, depth=32)


@pytest.mark.parametrize("name", ["resnet21", "resnet18", "resnet2", "resnett20", "vgg", "foo:bar"])
def test_bad_names_raise(name):
    with pytest.raises(LeannetError):
        build_model(name, 10)


@pytest.mark.parametrize("name, kwargs", [("resnet21", {}), ("cifar_resnet", {"depth": 21})])
def test_invalid_depth_message(name, kwargs):
    with pytest.raises(LeannetError, match=r"6n\+2"):
        build_model(name, 10, **kwargs)


def test_unknown_name_lists_valid_models():
    with pytest.raises(LeannetError, match="resnet20.*resnetD"):
        build_model("resnet_20", 10)


@pytest.mark.parametrize("kwargs", [{"norm": "nope"}, {"width": 0}, {"num_classes": 0}, {"depth_typo": 3}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(LeannetError):
        build_model("resnet8", **{"num_classes": 10, **kwargs})


def test_mlp_checks_its_input_shape():
    model = build_model("mlp", 10, in_channels=1, image_size=28, hidden=[32])
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(LeannetError, match="image_size"):
        model(torch.randn(2, 1, 32, 32))


def test_channels_last_forward():
    model = build_model("resnet20", 10).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()


def test_count_parameters_trainable_only():
    model = build_model("vgg_small", 10, width=0.25)
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    for p in model.fc.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - (32 * 10 + 10)
