"""Dataset sources read through torchvision: Fashion-MNIST, MNIST, CIFAR-10 and CIFAR-100."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from leannet.data.base import DATASETS, Split, one_line
from leannet.data.paths import ensure_fashion_mnist, has_idx_files, idx_folder
from leannet.errors import LeannetError


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: Path, train: bool) -> Split:
    """Fashion-MNIST: 28×28 grey clothing images, 10 classes, 60k train / 10k test."""
    from torchvision.datasets import FashionMNIST

    raw = ensure_fashion_mnist(root)
    return _idx_split(FashionMNIST, root, raw, train, (0.2860,), (0.3530,))


@DATASETS.register("mnist")
def mnist(root: Path, train: bool) -> Split:
    """MNIST: 28×28 grey handwritten digits, 10 classes, 60k train / 10k test."""
    from torchvision.datasets import MNIST

    raw = idx_folder(root, "MNIST")
    if not has_idx_files(raw):
        raise LeannetError(
            f"MNIST not found: expected train-/t10k- images-idx3-ubyte and labels-idx1-ubyte in {raw}; "
            "run `leannet data fetch mnist` (needs internet) "
            "or set LEANNET_DATA to the folder holding MNIST/raw"
        )
    return _idx_split(MNIST, root, raw, train, (0.1307,), (0.3081,))


def _idx_split(cls: type, root: Path, raw: Path, train: bool,
               mean: tuple[float, ...], std: tuple[float, ...]) -> Split:
    try:
        ds = cls(str(root), train=train, download=False)
        images, labels = ds.data, ds.targets
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except Exception as error:
        prefix = "train" if train else "t10k"
        bad = _first_unreadable([raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"],
                                _read_idx)
        raise LeannetError(
            f"{bad or raw} is corrupt or truncated ({one_line(error)}); delete it and fetch it again"
        ) from error
    return Split(images.unsqueeze(1).contiguous(), labels.long(), list(cls.classes), mean, std)


def _read_idx(path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    (read_image_file if "images" in path.name else read_label_file)(str(path))


def _without_md5(cls: type) -> type:
    """``cls`` (a torchvision CIFAR class) with the same loading code, but its files only have to exist:
    their contents are checked by unpickling, so copies not byte-identical to the official archive load."""
    return type(cls.__name__, (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


@DATASETS.register("cifar10")
def cifar10(root: Path, train: bool) -> Split:
    """CIFAR-10: 32×32 colour images, 10 classes, 50k train / 10k test."""
    from torchvision.datasets import CIFAR10

    return _cifar_split(_without_md5(CIFAR10), "CIFAR-10", "cifar10", root, train,
                        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@DATASETS.register("cifar100")
def cifar100(root: Path, train: bool) -> Split:
    """CIFAR-100: 32×32 colour images, 100 fine classes, 50k train / 10k test."""
    from torchvision.datasets import CIFAR100

    return _cifar_split(_without_md5(CIFAR100), "CIFAR-100", "cifar100", root, train,
                        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _cifar_split(cls: type, title: str, name: str, root: Path, train: bool,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> Split:
    folder = Path(root) / cls.base_folder
    files = [folder / f for f, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise LeannetError(
            f"{title} not found: expected {', '.join(missing)} in {folder}; run `leannet data fetch {name}` "
            f"(needs internet) or extract {cls.filename} into {root}"
        )
    try:
        ds = cls(str(root), train=train, download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(ds.targets, dtype=torch.int64)
        classes = list(ds.classes)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except Exception as error:
        bad = _first_unreadable(files, _read_pickle)
        raise LeannetError(
            f"{bad or folder} is corrupt or truncated ({one_line(error)}); delete it and fetch it again"
        ) from error
    return Split(images, labels, classes, mean, std)


def _read_pickle(path: Path) -> None:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError("not a CIFAR batch")


def _first_unreadable(paths: list[Path], read: Callable[[Path], None]) -> Path | None:
    """The first of ``paths`` that ``read`` fails on; only called once loading has already failed."""
    for path in paths:
        try:
            read(path)
        except Exception:
            return path
    return None
