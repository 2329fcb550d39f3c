"""From a dataset name to train/val/test loaders."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from leannet.data.base import DatasetInfo, Split, channel_stats, load_split
from leannet.data.dense import DenseLoader, TaskSplit
from leannet.data.paths import data_root
from leannet.data.tensor_loader import AUGMENTATIONS, TensorLoader
from leannet.data.torch_loader import torch_loader
from leannet.errors import LeannetError

LOADERS = ("tensor", "torch")
VAL_SEED = 0  # the validation carve never depends on the run seed


@dataclass
class Loaders:
    """The loaders of one run; ``val`` is None when no validation set was carved."""

    train: Iterable
    val: Iterable | None
    test: Iterable
    info: DatasetInfo


def carve_val(train: Split | TaskSplit, val_size: int) -> tuple[Split | TaskSplit, Split | TaskSplit | None]:
    """Split ``val_size`` random images off ``train`` with a fixed generator: ``(train, val)``."""
    if val_size == 0:
        return train, None
    if not 0 < val_size < len(train):
        raise LeannetError(
            f"val_size={val_size} must be between 0 and {len(train) - 1}: "
            f"the training split has {len(train)} images"
        )
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SEED))
    return train.subset(perm[val_size:].sort().values), train.subset(perm[:val_size].sort().values)


def dense_loaders(train: TaskSplit, test: TaskSplit, batch_size: int, eval_batch_size: int, val_size: int,
                  val_on_test: bool, seed: int, channels_last: bool) -> Loaders:
    """Loaders of a dense multi-task dataset (no augmentation); statistics from the whole training split."""
    mean, std = channel_stats(train.images)
    _, c, h, w = train.images.shape
    info = DatasetInfo(train.channels.get("segmentation", 1), c, (h, w), mean, std, tasks=dict(train.channels))
    train, val = carve_val(train, val_size)

    def make(split: TaskSplit, train_mode: bool) -> DenseLoader:
        size = batch_size if train_mode else eval_batch_size
        return DenseLoader(split, size, shuffle=train_mode, mean=mean, std=std, seed=seed,
                           drop_last=train_mode and len(split) > size, channels_last=channels_last)

    test_loader = make(test, False)
    val_loader = test_loader if val_on_test else make(val, False) if val is not None else None
    return Loaders(make(train, True), val_loader, test_loader, info)


def few_shot_subset(train: Split, per_class: int, seed: int) -> Split:
    """Keep ``per_class`` random images of every class (chosen by ``seed``)."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    shuffled = train.labels[perm]
    keep = []
    for c in range(len(train.class_names)):
        chosen = perm[shuffled == c][:per_class]
        if len(chosen) < per_class:
            raise LeannetError(
                f"few_shot={per_class} but class '{train.class_names[c]}' has only {len(chosen)} "
                "training images"
            )
        keep.append(chosen)
    return train.subset(torch.cat(keep).sort().values)


def build_loaders(
    name: str,
    *,
    root: Path | str | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 512,
    val_size: int = 5000,
    val_on_test: bool = False,
    few_shot: int | None = None,
    augment: str = "crop_flip",
    loader: str = "tensor",
    num_workers: int = 0,
    seed: int = 0,
    channels_last: bool = False,
    **dataset_kwargs: object,
) -> Loaders:
    """Load dataset ``name`` and wrap its splits in loaders.

    The validation set is carved from the training split with a fixed seed; ``few_shot`` then keeps
    that many training images per class. Normalisation statistics come from the full training split.
    Event data (``Split.steps`` > 0) is batched as [B, T, C, H, W] frames, without augmentation.
    ``val_on_test`` (with ``val_size=0``) evaluates the test set every epoch in the validation slot, so
    "best" becomes the best test epoch: the protocol of papers that report it (e.g. TSSL-BP), an
    optimistic number to be labelled so. ``num_workers`` only applies to ``loader="torch"``.
    """
    if loader not in LOADERS:
        raise LeannetError(f"unknown loader '{loader}'; valid loaders: {', '.join(LOADERS)}")
    if augment not in AUGMENTATIONS:
        raise LeannetError(f"unknown augment '{augment}'; valid augments: {', '.join(AUGMENTATIONS)}")
    if few_shot is not None and few_shot < 1:
        raise LeannetError(f"few_shot must be a positive number of images per class, got {few_shot}")
    if val_on_test and val_size:
        raise LeannetError(f"data.val_on_test uses the test set as validation set: set data.val_size=0 "
                           f"(got {val_size}) so that all training images train")
    root = Path(root) if root is not None else data_root()
    train = load_split(name, root, True, **dataset_kwargs)
    test = load_split(name, root, False, **dataset_kwargs)
    if isinstance(train, TaskSplit):
        if few_shot is not None or augment != "none" or loader != "tensor":
            raise LeannetError(f"dataset '{name}' is dense (one target map per task): it supports neither "
                               "data.few_shot nor augmentation nor data.loader=torch; set data.augment=none")
        return dense_loaders(train, test, batch_size, eval_batch_size, val_size, val_on_test, seed, channels_last)
    if train.steps and (augment != "none" or loader != "tensor"):
        raise LeannetError(f"dataset '{name}' holds event frames ([B, T, C, H, W]): it supports neither "
                           "augmentation nor data.loader=torch; set data.augment=none")
    info = DatasetInfo.from_split(train)
    train, val = carve_val(train, val_size)
    if few_shot is not None:
        train = few_shot_subset(train, few_shot, seed)

    def make(split: Split, train_mode: bool) -> Iterable:
        size = batch_size if train_mode else eval_batch_size
        # a last training batch of a few images would give BatchNorm noisy (or, for 1, no) statistics
        drop_last = train_mode and len(split.labels) > size
        common = dict(shuffle=train_mode, augment=augment if train_mode else "none", mean=info.mean,
                      std=info.std, seed=seed, drop_last=drop_last, channels_last=channels_last)
        if loader == "tensor":
            return TensorLoader(split.images, split.labels, size, steps=split.steps, **common)
        return torch_loader(split, size, num_workers=num_workers, **common)

    test_loader = make(test, False)
    val_loader = test_loader if val_on_test else make(val, False) if val is not None else None
    return Loaders(make(train, True), val_loader, test_loader, info)
