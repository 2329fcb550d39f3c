"""Small building blocks shared by leannet's own models."""

from __future__ import annotations

from torch import nn

from leannet.models.norms import make_norm


def conv_norm_relu(in_channels: int, out_channels: int, norm: str, stride: int = 1) -> nn.Sequential:
    """3×3 convolution (no bias) + norm + ReLU, keeping the spatial size when ``stride`` is 1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        make_norm(norm, out_channels),
        nn.ReLU(inplace=True),
    )


def init_weights(model: nn.Module) -> None:
    """He et al. 2015 init: Kaiming normal (fan_out, ReLU) for convolutions; BatchNorm γ=1, β=0.

    Linear layers and other norms keep PyTorch's / their own initialization.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
