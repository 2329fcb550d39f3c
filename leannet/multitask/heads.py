"""Dense tasks: their output channels, task-specific heads and training losses.

The AdaShare paper uses DeepLab-v2 ASPP heads (parallel dilated 3×3 branches whose outputs are
summed); ``DenseHead`` is that design scaled down for small images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from leannet.data.scenes import SHAPES
from leannet.errors import LeannetError


def segmentation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy; target -1 is ignored."""
    return F.cross_entropy(pred, target, ignore_index=-1)


def depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 depth error over valid pixels (target > 0), as in AdaShare."""
    valid = target > 0
    return (pred[:, 0] - target).abs()[valid].mean()


def normals_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity between the normalised prediction and the unit target, over valid pixels
    (target of non-zero length), as in AdaShare."""
    valid = target.abs().sum(1) > 0
    cos = (F.normalize(pred, dim=1) * target).sum(1)
    return 1 - cos[valid].mean()


def edges_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy on edge logits (HED-style: positives weighted by the
    negative fraction of the batch)."""
    target = target.float()
    pos = target.mean().clamp(1e-3, 1 - 1e-3)
    weight = torch.where(target > 0.5, 1 - pos, pos)
    return F.binary_cross_entropy_with_logits(pred[:, 0], target, weight=weight) / (2 * pos * (1 - pos))


def autoencoding_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 error between the predicted image and the input image (uint8 target, scaled to [0, 1]), as
    Taskonomy's autoencoding task: a low-level target that semantic features in the deep blocks discard."""
    return (pred - target.to(pred.dtype) / 255).abs().mean()


@dataclass(frozen=True)
class TaskSpec:
    """A dense task: output channels and the loss ``loss(prediction N×C×H×W, target)``."""

    name: str
    channels: int
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


TASKS: dict[str, TaskSpec] = {
    "segmentation": TaskSpec("segmentation", 1 + len(SHAPES), segmentation_loss),
    "depth": TaskSpec("depth", 1, depth_loss),
    "normals": TaskSpec("normals", 3, normals_loss),
    "edges": TaskSpec("edges", 1, edges_loss),
    "autoencoding": TaskSpec("autoencoding", 3, autoencoding_loss),
}


def task_specs(names: list[str] | tuple[str, ...]) -> list[TaskSpec]:
    """The specs of tasks ``names`` (unknown names are a one-line error listing the valid ones)."""
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names or len(set(names)) != len(names):
        raise LeannetError(f"tasks must be distinct names from {', '.join(TASKS)}; got {list(names)}")
    return [TASKS[n] for n in names]


class DenseHead(nn.Module):
    """ASPP-style head: sum over dilations d of conv1×1(ReLU(conv3×3_d(x))), upsampled to the input size."""

    def __init__(self, in_channels: int, out_channels: int, dilations: tuple[int, ...] = (1, 2, 3),
                 hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(in_channels // 2, out_channels)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=d, dilation=d), nn.ReLU(inplace=True),
                          nn.Conv2d(hidden, out_channels, 1))
            for d in dilations
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = sum(branch(x) for branch in self.branches)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
