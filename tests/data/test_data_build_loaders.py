from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from leannet.data import Split, TensorLoader, build_loaders
from leannet.data.base import channel_stats, load_split
from leannet.data.loaders import carve_val, few_shot_subset
from leannet.errors import LeannetError


def numbered_split(n: int = 300, classes: int = 10) -> Split:
    """Image i carries its own index in two pixels, so subsets can be traced back."""
    ids = torch.arange(n)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = (ids % 256).to(torch.uint8), (ids // 256).to(torch.uint8)
    return Split(images, ids % classes, [f"c{i}" for i in range(classes)])


def ids(split: Split) -> set[int]:
    return set((split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()).tolist())


def test_val_carve_is_fixed_and_disjoint():
    split = numbered_split()
    train, val = carve_val(split, 50)
    again_train, again_val = carve_val(split, 50)
    assert len(val) == 50 and len(train) == 250
    assert ids(val) == ids(again_val) and ids(train) == ids(again_train)
    assert ids(train).isdisjoint(ids(val)) and ids(train) | ids(val) == set(range(300))
    assert carve_val(split, 0) == (split, None)
    with pytest.raises(LeannetError, match="val_size=300"):
        carve_val(split, 300)


def test_few_shot_keeps_n_per_class_depending_on_seed():
    split = numbered_split()
    picked = few_shot_subset(split, 3, seed=0)
    assert torch.bincount(picked.labels).tolist() == [3] * 10
    assert ids(picked) == ids(few_shot_subset(split, 3, seed=0)) != ids(few_shot_subset(split, 3, seed=1))
    with pytest.raises(LeannetError, match="few_shot=31"):
        few_shot_subset(split, 31, seed=0)


def all_labels(loader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_build_loaders_on_digits():
    loaders = build_loaders("digits", val_size=237, batch_size=100, eval_batch_size=200, seed=3)
    assert isinstance(loaders.train, TensorLoader)
    assert len(all_labels(loaders.train)) == 1200 and len(loaders.train) == 12
    assert len(loaders.val) == 2 and len(all_labels(loaders.val)) == 237
    assert torch.equal(all_labels(loaders.test), load_split("digits", Path("."), False).labels)
    assert loaders.info.mean == channel_stats(load_split("digits", Path("."), True).images)[0]
    x, y = next(iter(loaders.train))
    assert x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_val_does_not_depend_on_the_run_seed():
    a = build_loaders("digits", val_size=100, seed=0)
    b = build_loaders("digits", val_size=100, seed=1)
    xa, ya = next(iter(a.val))
    xb, yb = next(iter(b.val))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(all_labels(a.train), all_labels(b.train))


def test_eval_loaders_are_plain_and_stable():
    loaders = build_loaders("digits", val_size=100)
    first, second = list(loaders.test), list(loaders.test)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    assert loaders.test.augment == "none" and not loaders.test.shuffle and not loaders.test.drop_last


def test_few_shot_and_no_val():
    loaders = build_loaders("digits", val_size=0, few_shot=5)
    assert loaders.val is None
    assert torch.bincount(all_labels(loaders.train)).tolist() == [5] * 10


def test_torch_loader_option():
    loaders = build_loaders("digits", val_size=100, loader="torch", batch_size=32)
    assert isinstance(loaders.train, DataLoader)
    x, y = next(iter(loaders.train))
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"loader": "dali"}, "valid loaders: tensor, torch"),
    ({"augment": "mixup"}, "valid augments: none, flip, crop_flip"),
    ({"val_size": 5000}, "val_size=5000 must be between 0 and 1436"),
    ({"few_shot": 0}, "few_shot must be a positive"),
    ({"colour": 1}, "does not take colour"),
])
def test_bad_options_are_one_line_errors(kwargs, match):
    with pytest.raises(LeannetError, match=match) as info:
        build_loaders("digits", **({"val_size": 100} | kwargs))
    assert "\n" not in str(info.value)


def test_val_on_test_evaluates_the_test_set_every_epoch_and_needs_val_size_0():
    loaders = build_loaders("digits", val_size=0, val_on_test=True, augment="none")
    assert loaders.val is loaders.test
    assert len(loaders.train.labels) == len(build_loaders("digits", val_size=0).train.labels)  # all train images
    with pytest.raises(LeannetError, match="data.val_on_test uses the test set as validation set: set data.val_size=0"):
        build_loaders("digits", val_size=100, val_on_test=True)
