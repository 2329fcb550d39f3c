"""Small baselines: a VGG-style CNN and a multilayer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.models.factory import register_model
from leannet.models.layers import conv_norm_relu, init_weights


class VGGSmall(nn.Module):
    """VGG-style CNN (Simonyan & Zisserman 2015), scaled down for 28×28 / 32×32 images.

    Stages ``layer1`` .. ``layer3`` are two 3×3 conv-norm-ReLU layers and a 2×2 max-pool each
    (32, 32, M, 64, 64, M, 128, 128, M channels, × width), then ``pool`` (global average) and ``fc``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, norm: str = "bn", width: float = 1.0) -> None:
        super().__init__()
        channels = in_channels
        for i, base in enumerate((32, 64, 128)):
            out = max(1, round(base * width))
            stage = nn.Sequential(
                conv_norm_relu(channels, out, norm), conv_norm_relu(out, out, norm), nn.MaxPool2d(2)
            )
            self.add_module(f"layer{i + 1}", stage)
            channels = out
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


class MLP(nn.Module):
    """Flatten, fully connected hidden layers with ReLU, linear classifier (``fc``).

    The input must be ``in_channels × image_size × image_size`` (or ``image_size`` = (H, W)).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int | tuple[int, int] = 28,
        hidden: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.input_shape = (in_channels, h, w)
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_channels * h * w
        for size in hidden:
            layers += [nn.Linear(features, size), nn.ReLU(inplace=True)]
            features = size
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise LeannetError(
                f"mlp was built for inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}; "
                f"build it with the matching in_channels and image_size"
            )
        return self.fc(self.hidden(x))


@register_model("vgg_small")
def vgg_small(num_classes: int, in_channels: int = 3, norm: str = "bn", width: float = 1.0) -> VGGSmall:
    """Small VGG-style CNN (6 conv layers, global average pool); see :class:`VGGSmall`."""
    return VGGSmall(num_classes, in_channels, norm, width)


@register_model("mlp")
def mlp(
    num_classes: int,
    in_channels: int = 3,
    norm: str = "bn",
    width: float = 1.0,
    image_size: int | tuple[int, int] = 28,
    hidden: Sequence[int] = (256, 256),
) -> MLP:
    """MLP with ``hidden`` layer sizes (× width) for ``image_size`` inputs; see :class:`MLP`.

    It has no 2-D feature maps, hence no norm layers: ``norm`` is accepted and ignored.
    """
    sizes = [max(1, round(size * width)) for size in hidden]
    return MLP(num_classes, in_channels, image_size, sizes)
