"""The in-memory form of a dataset split, its metadata, and the registry of dataset sources."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from leannet.errors import LeannetError
from leannet.registry import Registry


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare by identity
class Split:
    """One split of a dataset, held whole in memory.

    ``mean``/``std`` are the dataset's published per-channel statistics (on the 0..1 scale), or
    ``None`` when they must be computed from the training split.

    Event data (``steps`` > 0): each sample is a sequence of ``steps`` frames of C/steps channels,
    packed frame after frame into the C channels (frame t, channel k at index t·C/steps + k); the
    statistics are per frame channel and loaders yield [B, steps, C/steps, H, W].
    """

    images: torch.Tensor  # uint8 N×C×H×W
    labels: torch.Tensor  # int64 N
    class_names: list[str]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    steps: int = 0  # time steps packed into the channels; 0 = still images

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.steps < 0 or (self.steps and self.images.shape[1] % self.steps):
            raise ValueError(f"steps={self.steps} must be 0 or divide the {self.images.shape[1]} channels")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 of length {len(self.images)}, got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> Split:
        """The images and labels at ``indices``, with the same class names and statistics."""
        return Split(self.images[indices], self.labels[indices], self.class_names, self.mean, self.std, self.steps)

    def frame_channels(self) -> int:
        """Channels of one frame: C/steps for event data, C for still images."""
        return self.images.shape[1] // (self.steps or 1)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a normaliser need to know about a dataset.

    ``in_channels`` and the statistics are those of one frame; ``steps`` > 0 marks event data, whose
    batches are [B, steps, in_channels, H, W].
    """

    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    tasks: dict[str, int] = field(default_factory=dict)  # dense data: task → output channels of its head
    steps: int = 0

    @classmethod
    def from_split(cls, train: Split) -> DatasetInfo:
        """Describe a dataset from its training split; missing statistics are computed from it."""
        _, _, h, w = train.images.shape
        c = train.frame_channels()
        if train.mean is not None and train.std is not None:
            mean, std = train.mean, train.std
        else:
            mean, std = channel_stats(train.images.reshape(-1, c, h, w))
        return cls(len(train.class_names), c, (h, w), mean, std, list(train.class_names), steps=train.steps)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 N×C×H×W images, on the 0..1 scale."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
        total += x.sum(1)
        squares += x.square().sum(1)
    count = images.numel() // c
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


SplitSource = Callable[..., Split]

DATASETS: Registry[SplitSource] = Registry("dataset")
"""Dataset sources: ``(root: Path, train: bool, **kw) -> Split``."""


def load_split(name: str, root: Path, train: bool, **kwargs: object) -> Split:
    """Load one split of a registered dataset, turning unknown options into a one-line error."""
    source = DATASETS.get(name)
    try:
        inspect.signature(source).bind(root, train, **kwargs)
    except TypeError:
        options = [p for p in inspect.signature(source).parameters if p not in ("root", "train")]
        raise LeannetError(
            f"dataset '{name}' does not take {', '.join(sorted(kwargs))}; "
            f"its options are: {', '.join(options) or 'none'}"
        ) from None
    split = source(root, train, **kwargs)
    labelled = isinstance(split, Split) and len(split)  # dense multi-task splits have no class labels
    if labelled and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < len(split.class_names):
        bad = split.labels[(split.labels < 0) | (split.labels >= len(split.class_names))]
        raise LeannetError(
            f"the {'training' if train else 'test'} labels of dataset '{name}' in {root} include {int(bad[0])}, "
            f"outside 0..{len(split.class_names) - 1} ({len(bad)} such labels): the label file is corrupt; "
            f"delete it and fetch the dataset again (`leannet data fetch {name}`)"
        )
    return split


def one_line(error: BaseException) -> str:
    """An exception as a single line of text, for embedding in a LeannetError message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
