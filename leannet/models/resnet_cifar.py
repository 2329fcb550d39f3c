"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", §4.2).

Shortcuts that change the shape are a 1×1 convolution + norm (option B), as in open_lth and the
BN-only experiments of Frankle et al. 2021 ("Training BatchNorm and Only BatchNorm").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.models.factory import ModelFactory, register_model, register_model_pattern
from leannet.models.layers import conv_norm_relu, init_weights
from leannet.models.norms import make_norm

CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Post-activation basic block: conv-norm-relu-conv-norm, add the shortcut, relu."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, norm: str = "bn") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), make_norm(norm, channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3×3 stem (stride 1, no max-pool), stages of basic blocks, avg-pool, fc.

    Stage ``i`` has ``blocks[i]`` blocks of ``widths[i]`` channels; every stage after the first
    starts with stride 2. Submodules: ``stem``, ``layer1`` .. ``layerK``, ``pool``, ``fc``.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        self.stem = conv_norm_relu(in_channels, widths[0], norm)
        channels = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            layers = [
                BasicBlock(channels if j == 0 else width, width, stride if j == 0 else 1, norm)
                for j in range(count)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            channels = width
        self.num_stages = len(blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.pool(x))


@register_model("cifar_resnet")
def cifar_resnet(
    num_classes: int,
    in_channels: int = 3,
    norm: str = "bn",
    width: float = 1.0,
    depth: int = 20,
) -> CifarResNet:
    """ResNet-``depth`` of He et al. 2016 §4.2: three stages of (depth−2)/6 blocks, widths W, 2W, 4W.

    W = round(16·width). ``depth`` must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...).
    """
    if depth < 8 or (depth - 2) % 6:
        raise LeannetError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, ...); got {depth} "
            "(for ResNet-18 on CIFAR use resnet18_cifar; ImageNet ResNets are tv:resnetN / timm:resnetN)"
        )
    w = max(1, round(16 * width))
    n = (depth - 2) // 6
    return CifarResNet([n] * 3, [w, 2 * w, 4 * w], num_classes, in_channels, norm)


def _fixed_depth(depth: int) -> ModelFactory:
    def factory(num_classes: int, in_channels: int = 3, norm: str = "bn", width: float = 1.0) -> CifarResNet:
        return cifar_resnet(num_classes, in_channels, norm, width, depth=depth)

    factory.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2016 §4.2); see :func:`cifar_resnet`."
    return factory


for _depth in CIFAR_DEPTHS:
    register_model(f"resnet{_depth}")(_fixed_depth(_depth))


@register_model_pattern(r"resnet(\d+)", "resnetD (any D = 6n+2)")
def _resnet_any_depth(match: re.Match[str]) -> ModelFactory:
    return _fixed_depth(int(match[1]))


@register_model("resnet18_cifar")
def resnet18_cifar(
    num_classes: int,
    in_channels: int = 3,
    norm: str = "bn",
    width: float = 1.0,
) -> CifarResNet:
    """ResNet-18 for CIFAR (stem 3×3 stride 1, no max-pool; 2 blocks per stage, 64/128/256/512 × width).

    The model used on CIFAR-100 by Tf-KD (Yuan et al. 2020) and BYOT (Zhang et al. 2019).
    """
    widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
    return CifarResNet([2, 2, 2, 2], widths, num_classes, in_channels, norm)
