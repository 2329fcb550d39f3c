"""Dense multi-task datasets (one image, one target map per task) and their in-memory loader.

A dense source is registered in the same ``DATASETS`` registry as classification sources and returns a
:class:`TaskSplit` instead of a ``Split``; ``build_loaders`` then wraps it in :class:`DenseLoader`s,
which yield ``(x float32 N×C×H×W, {task: target})``. Registered here: ``scenes_tasks`` (procedural
scenes, generated) and ``nyuv2`` (the AdaShare authors' NYU-v2 layout, read from ``root/nyuv2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leannet.data.base import DATASETS
from leannet.data.tensor_loader import EpochSampler, _generator, _rank_and_world, shard_indices
from leannet.errors import LeannetError

SCENE_TASKS = ("segmentation", "depth", "normals", "edges", "autoencoding")
NYU_TASKS = ("segmentation", "depth", "normals")
NYU_CLASSES = 40


@dataclass(frozen=True, eq=False)
class TaskSplit:
    """Images (uint8 N×C×H×W) with one dense target per task; ``channels[task]`` is the number of output
    channels a head needs for it (classes for segmentation)."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    channels: dict[str, int]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        for task, target in self.targets.items():
            if len(target) != len(self.images):
                raise ValueError(f"target '{task}' has {len(target)} samples for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: torch.Tensor) -> TaskSplit:
        """The images and targets at ``indices``."""
        return TaskSplit(self.images[indices], {t: v[indices] for t, v in self.targets.items()}, self.channels)


def _check_tasks(tasks: Sequence[str], valid: Sequence[str], dataset: str) -> list[str]:
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in valid]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise LeannetError(f"dataset '{dataset}' has tasks {', '.join(valid)}; data.args.tasks={tasks} must be "
                           "distinct names among them")
    return tasks


@DATASETS.register("scenes_tasks")
def scenes_tasks(root: Path, train: bool, size: int = 32, train_count: int = 1500, test_count: int = 500,
                 scene_seed: int = 0, tasks: Sequence[str] = ("segmentation", "depth", "normals")) -> TaskSplit:
    """Procedural scenes with dense targets (``leannet.data.scenes``): segmentation (background + shape
    classes), depth, surface normals, occlusion edges and autoencoding (the image itself, Taskonomy's
    low-level task), generated from ``scene_seed`` (fixed across run
    seeds: every run sees the same scenes); the test scenes from ``scene_seed + 1_000_003``. Both are
    cached under ``root/scenes``."""
    from leannet.data.scenes import SHAPES, load_scenes

    tasks = _check_tasks(tasks, SCENE_TASKS, "scenes_tasks")
    count, split_seed = (train_count, scene_seed) if train else (test_count, scene_seed + 1_000_003)
    scenes = load_scenes(count, split_seed, size, cache_dir=Path(root) / "scenes")
    channels = {"segmentation": 1 + len(SHAPES), "depth": 1, "normals": 3, "edges": 1, "autoencoding": 3}
    images = torch.from_numpy(np.ascontiguousarray(scenes.image))
    return TaskSplit(images, {t: images if t == "autoencoding" else torch.from_numpy(np.ascontiguousarray(
        getattr(scenes, t))) for t in tasks}, {t: channels[t] for t in tasks})


@DATASETS.register("nyuv2")
def nyuv2(root: Path, train: bool, size: int | None = None,
          tasks: Sequence[str] = ("segmentation", "depth", "normals")) -> TaskSplit:
    """NYU-v2 (40 classes, depth, normals) in the AdaShare authors' layout under ``root/nyuv2``
    (``leannet.data.nyuv2``); invalid normals become zero vectors, which the normals loss ignores."""
    from leannet.data.nyuv2 import read_nyuv2

    tasks = _check_tasks(tasks, NYU_TASKS, "nyuv2")
    split = read_nyuv2(Path(root) / "nyuv2", "train" if train else "test", size)
    channels = {"segmentation": NYU_CLASSES, "depth": 1, "normals": 3}
    return TaskSplit(torch.from_numpy(split.image), {t: torch.from_numpy(getattr(split, t)) for t in tasks},
                     {t: channels[t] for t in tasks})


class DenseLoader:
    """Batches of ``(x, {task: target})`` from a :class:`TaskSplit` in memory, normalised per channel.

    Epoch ``e``'s order depends only on ``(seed, e)``; under ``torch.distributed`` each rank gets an
    equal shard. ``plan(epoch) -> indices | None`` (a method's ``train_subset``, e.g. AdaShare's two halves
    of the training set) restricts each epoch to those samples; ``set_subset(indices)`` fixes one subset
    for every pass (None restores the whole split).
    """

    def __init__(self, split: TaskSplit, batch_size: int, *, shuffle: bool = False, mean: Sequence[float],
                 std: Sequence[float], seed: int = 0, drop_last: bool = False, channels_last: bool = False) -> None:
        c = split.images.shape[1]
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.drop_last, self.channels_last = drop_last, channels_last
        self._scale = (1 / (255 * torch.tensor(std, dtype=torch.float32).expand(c))).view(1, c, 1, 1)
        self._shift = (-torch.tensor(mean, dtype=torch.float32).expand(c)
                       / torch.tensor(std, dtype=torch.float32).expand(c)).view(1, c, 1, 1)
        self.sampler = EpochSampler()
        self.batch_sampler = None  # Lightning inspects it; batching is built in
        self.subset: torch.Tensor | None = None
        self.plan: Callable[[int], torch.Tensor | None] | None = None

    @property
    def num_items(self) -> int:
        """Samples in the whole split (``set_subset`` indexes into it)."""
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def set_subset(self, indices: torch.Tensor | None) -> None:
        if indices is not None and len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < len(self.split):
            raise LeannetError(f"train subset indices must lie in 0..{len(self.split) - 1}")
        self.subset = indices

    def _pool(self) -> torch.Tensor:
        """The samples of the next pass (epoch ``sampler.epoch``)."""
        subset = self.plan(self.sampler.epoch) if self.plan is not None else self.subset
        return torch.arange(len(self.split)) if subset is None else subset

    def __len__(self) -> int:
        _, world = _rank_and_world()
        n = len(self._pool()) // world
        return n // self.batch_size if self.drop_last and n > self.batch_size else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        pool = self._pool()  # this epoch's samples, before the epoch advances
        epoch = self.sampler.epoch
        self.sampler.epoch = epoch + 1
        order = pool[torch.randperm(len(pool), generator=_generator(self.seed, epoch))] if self.shuffle else pool
        rank, world = _rank_and_world()
        if world > 1:
            order = shard_indices(order, rank, world)
        stop = len(self) * self.batch_size if self.drop_last else len(order)
        for start in range(0, min(stop, len(order)), self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.split.images[idx].to(torch.float32).mul_(self._scale).add_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, {t: v[idx] for t, v in self.split.targets.items()}
