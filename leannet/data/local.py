"""Dataset sources that need no download: scikit-learn's digits and a user's image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leannet.data.base import DATASETS, Split, one_line
from leannet.errors import LeannetError


@DATASETS.register("digits")
def digits(root: Path, train: bool) -> Split:
    """scikit-learn's 8×8 digits (1797 images, 10 classes), split 80/20 with a fixed seed.

    ``root`` is unused: the data ships with scikit-learn.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    x, y = (x_train, y_train) if train else (x_test, y_test)
    return Split(torch.from_numpy(x).unsqueeze(1).contiguous(), torch.from_numpy(y).long(),
                 [str(d) for d in range(10)])


@DATASETS.register("imagefolder")
def imagefolder(root: Path, train: bool, image_size: int | tuple[int, int] = 32) -> Split:
    """Images in ``root/train/<class>/`` and ``root/test/<class>/`` (or ``root/val/``), decoded as RGB
    and resized to ``image_size``; classes are the sorted folder names of ``train/``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = Path(root)
    folder = root / "train" if train else next((root / d for d in ("test", "val") if (root / d).is_dir()),
                                               root / "test")
    if not (root / "train").is_dir() or not folder.is_dir():
        raise LeannetError(
            f"imagefolder expects {root}/train/<class>/ and {root}/test/<class>/ (or val/) holding images; "
            "pass root=<that folder>"
        )
    try:
        classes, class_to_idx = find_classes(root / "train")
        unknown = sorted(set(find_classes(folder)[0]) - set(classes))
        if unknown:
            raise ValueError(f"classes {', '.join(unknown)} are in {folder.name}/ but not in train/")
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=not train)
    except (FileNotFoundError, ValueError) as error:
        raise LeannetError(f"imagefolder {folder}: {one_line(error)}") from error
    if not samples:
        raise LeannetError(f"imagefolder {folder} holds no images ({', '.join(IMG_EXTENSIONS)})")

    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    pixels = np.empty((len(samples), h, w, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        pixels[i] = _decode(Path(path), (w, h))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return Split(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels, classes)


def _decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR))
    except (OSError, ValueError) as error:
        raise LeannetError(f"cannot read image {path} ({one_line(error)}); fix or delete it") from error
