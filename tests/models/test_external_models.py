import pytest
import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.models import build_model


@pytest.mark.parametrize("name", ["tv:resnet18", "timm:resnet18"])
def test_one_channel_input(name):
    model = build_model(name, num_classes=10, in_channels=1)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_torchvision_input_conv_keeps_hyperparameters():
    model = build_model("tv:resnet18", 10, in_channels=1)
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (
        1,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
    )
    assert conv.bias is None


def test_norm_swap_on_external_model():
    model = build_model("tv:resnet18", 10, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    "name, match",
    [("tv:resnet19", "close matches: resnet18"), ("timm:resnet_18", "resnet18"), ("x:y", "tv:")],
)
def test_unknown_external_names(name, match):
    with pytest.raises(LeannetError, match=match):
        build_model(name, 10)


def test_width_is_rejected_for_external_models():
    with pytest.raises(LeannetError, match="width"):
        build_model("tv:resnet18", 10, width=2)
