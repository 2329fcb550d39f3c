"""Dataset sources read through torchvision: Fashion-MNIST, MNIST, CIFAR-10 and CIFAR-100."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from leannet.data.base import DATASETS, Split, one_line
from leannet.data.paths import ensure_fashion_mnist, has_idx_files, idx_folder
from leannet.data.pickles import load_data_pickle
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


@DATASETS.register("cifar10")
def cifar10(root: Path, train: bool) -> Split:
    """CIFAR-10: 32×32 colour images, 10 classes, 50k train / 10k test."""
    from torchvision.datasets import CIFAR10

    return _cifar_split(CIFAR10, "CIFAR-10", "cifar10", "labels", root, train,
                        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@DATASETS.register("cifar100")
def cifar100(root: Path, train: bool) -> Split:
    """CIFAR-100: 32×32 colour images, 100 fine classes, 50k train / 10k test."""
    from torchvision.datasets import CIFAR100

    return _cifar_split(CIFAR100, "CIFAR-100", "cifar100", "fine_labels", root, train,
                        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _cifar_split(cls: type, title: str, name: str, label_key: str, root: Path, train: bool,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> Split:
    """The python batches of ``cls`` (torchvision's CIFAR class, for its file names only), read by
    :func:`leannet.data.pickles.load_data_pickle`, which runs no code a file names. No md5 check: copies not
    byte-identical to the official archive load too, as their contents are checked."""
    folder = Path(root) / cls.base_folder
    batches = [folder / f for f, _ in (cls.train_list if train else cls.test_list)]
    files = [folder / f for f, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise LeannetError(
            f"{title} not found: expected {', '.join(missing)} in {folder}; run `leannet data fetch {name}` "
            f"(needs internet) or extract {cls.filename} into {root}"
        )
    data, labels = [], []
    for path in batches:
        batch = _read_cifar(path, lambda e: _cifar_batch(e, label_key))
        data.append(batch["data"])
        labels += batch[label_key]
    classes = _read_cifar(folder / cls.meta["filename"], lambda e: _cifar_meta(e, cls.meta["key"]))[cls.meta["key"]]
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
    return Split(images, torch.tensor(labels, dtype=torch.int64), list(classes), mean, std)


def _read_cifar(path: Path, check: Callable[[object], None]) -> dict:
    """One CIFAR pickle, refused with a one-line error naming it if it would run code or is malformed."""
    try:
        entry = load_data_pickle(path)
        check(entry)
    except pickle.UnpicklingError as error:
        if "could run code" in str(error):
            raise LeannetError(f"{path} is refused: {error}; delete it and fetch it again") from None
        raise LeannetError(f"{path} is corrupt or truncated ({one_line(error)}); delete it and fetch it again") \
            from error
    except Exception as error:
        raise LeannetError(f"{path} is corrupt or truncated ({one_line(error)}); delete it and fetch it again") \
            from error
    return entry


def _cifar_batch(entry: object, label_key: str) -> None:
    """Checks a CIFAR batch: a dict with ``data`` (uint8 N×3072) and ``label_key`` (N integers)."""
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise ValueError(f"not a CIFAR batch: expected a dict with 'data' and '{label_key}'")
    data, labels = entry["data"], entry[label_key]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ValueError(f"'data' must be a uint8 N×3072 array, got {getattr(data, 'dtype', type(data).__name__)} "
                         f"{getattr(data, 'shape', '')}")
    if not (isinstance(labels, list) and len(labels) == len(data) and all(type(v) is int for v in labels)):
        raise ValueError(f"'{label_key}' must be a list of {len(data)} integers")


def _cifar_meta(entry: object, key: str) -> None:
    """Checks a CIFAR meta file: a dict whose ``key`` lists the class names."""
    if not (isinstance(entry, dict) and isinstance(entry.get(key), list)
            and all(isinstance(v, str) for v in entry[key])):
        raise ValueError(f"not a CIFAR meta file: expected a dict whose '{key}' lists the class names")


def _first_unreadable(paths: list[Path], read: Callable[[Path], None]) -> Path | None:
    """The first of ``paths`` that ``read`` fails on; only called once loading has already failed."""
    for path in paths:
        try:
            read(path)
        except Exception:
            return path
    return None
