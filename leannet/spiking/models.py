"""Spiking networks from the paper's spec strings, registered as models ``snn_<spec>``.

``snn_32C5-P2-64C5-P2-1024`` is the TSSL-BP Fashion-MNIST CNN: tokens separated by ``-`` are
``<n>C<k>`` (spiking conv, n channels, k×k, 'same' padding), ``P<k>`` (k×k sum-pool ×1.1 of PSCs),
``<n>`` (spiking linear, n neurons) and ``D<p>`` (dropout p, one mask for all steps). The output
spiking linear layer with ``num_classes`` neurons is appended. The name uses ``_`` rather than ``:``
because ``build_model`` routes ``x:y`` names to torchvision/timm.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.models.factory import register_model_pattern
from leannet.spiking.layers import ENCODINGS, LIF, SpikingConv2d, SpikingLinear, SumPool2d, TimeDropout, encode
from leannet.spiking.neurons import psc_filter

_TOKEN = r"(?:\d+C\d+|P\d+|\d+|D(?:0?\.\d+|0))"
SPEC = re.compile(rf"{_TOKEN}(?:-{_TOKEN})*")


class SpikingNet(nn.Module):
    """A feed-forward SNN over images [B, C, H, W] (or event frames [B, T, C, H, W]).

    ``forward`` returns logits Σ_t a^out_t [B, classes] (paper file, Readout: argmax of summed output
    PSC) so the ordinary trainer and evaluation work; ``forward_series`` returns the output PSCs
    [T, B, classes] the spiking losses need.
    """

    def __init__(self, spec: str, num_classes: int, in_channels: int = 1,
                 image_size: int | tuple[int, int] = 28, steps: int = 5, tau_m: float = 5.0,
                 tau_s: float = 3.0, threshold: float = 1.0, encoding: str = "analog",
                 pool_scale: float = 1.1, width: float = 1.0, conv_init_scale: float = 1.0) -> None:
        super().__init__()
        if not SPEC.fullmatch(spec):
            raise LeannetError(
                f"bad spiking network spec '{spec}'; write tokens like 32C5 (conv), P2 (sum-pool), "
                "400 (linear), D0.2 (dropout) joined by '-', e.g. 32C5-P2-64C5-P2-1024"
            )
        if steps < 1:
            raise LeannetError(f"model.args.steps must be >= 1, got {steps}")
        if encoding not in ENCODINGS:
            raise LeannetError(f"unknown encoding '{encoding}'; valid encodings: {', '.join(ENCODINGS)}")
        self.spec, self.steps, self.tau_s, self.encoding = spec, steps, tau_s, encoding
        neuron = {"tau_m": tau_m, "tau_s": tau_s, "threshold": threshold}
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        channels, flat, layers = in_channels, None, []
        for token in spec.split("-"):
            if "C" in token:
                if flat is not None:
                    raise LeannetError(f"conv token '{token}' after a linear layer in spec '{spec}'")
                out, k = (int(v) for v in token.split("C"))
                out = max(1, round(out * width))
                layers.append(SpikingConv2d(channels, out, k, conv_init_scale, **neuron))
                channels = out
            elif token.startswith("P"):
                k = int(token[1:])
                if flat is not None or k < 1 or h < k or w < k:
                    raise LeannetError(f"cannot sum-pool {k}×{k} at '{token}' in spec '{spec}' ({h}×{w} maps)")
                layers.append(SumPool2d(k, pool_scale))
                h, w = h // k, w // k
            elif token.startswith("D"):
                layers.append(TimeDropout(float(token[1:])))
            else:
                out = max(1, round(int(token) * width))
                layers.append(SpikingLinear(flat if flat is not None else channels * h * w, out, **neuron))
                flat = out
        layers.append(SpikingLinear(flat if flat is not None else channels * h * w, num_classes, **neuron))
        self.layers = nn.Sequential(*layers)

    def inputs(self, x: Tensor) -> Tensor:
        """Input PSCs [T, B, …]: encoded images, or filtered event frames for 5-D input [B, T, C, H, W]."""
        if x.ndim == 5:
            return psc_filter(x.transpose(0, 1).to(next(self.parameters()).dtype), self.tau_s)
        return encode(x, self.steps, self.tau_s, self.encoding)

    def forward_series(self, x: Tensor) -> Tensor:
        """Output PSCs [T, B, classes]."""
        return self.layers(self.inputs(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_series(x).sum(0)

    def neurons(self) -> list[LIF]:
        return [m for m in self.modules() if isinstance(m, LIF)]


@register_model_pattern(r"snn_(.+)", "snn_<spec> (spiking net, e.g. snn_400-400, snn_32C5-P2-64C5-P2-1024)")
def _snn(match: re.Match[str]):  # noqa: ANN202
    spec = match.group(1)

    def factory(*, num_classes: int, in_channels: int, norm: str, width: float,
                image_size: int | tuple[int, int] = 28, steps: int = 5, tau_m: float = 5.0,
                tau_s: float = 3.0, threshold: float = 1.0, encoding: str = "analog",
                pool_scale: float = 1.1, conv_init_scale: float = 1.0) -> SpikingNet:
        """Spiking nets have no normalisation layers; ``norm`` is accepted and unused."""
        return SpikingNet(spec, num_classes, in_channels, image_size, steps, tau_m, tau_s, threshold,
                          encoding, pool_scale, width, conv_init_scale)

    return factory
