"""A reader for the Broden probe-dataset format (Bau et al. 2017, Network Dissection).

A Broden folder holds::

    index.csv    image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
                 one row per image; ``image`` is a path under images/; the pixel-category columns hold
                 PNG label masks (paths under images/, several separated by ``;``); the image-level
                 columns (scene, texture) hold label numbers, several separated by ``;``
    label.csv    number,name[,category,...]: the name (and category) of every label number
    images/      the images and their label PNGs; a mask pixel's label is R + 256·G (0 = none)

Which columns are pixel-level and which image-level is read from the cells: a cell holding only
numbers is image-level, one holding file names is a mask. Only what is needed for dissection is read;
`leannet.explain.probes.broden_probe` turns a folder into a dissection probe.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from leannet.errors import LeannetError

FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")


@dataclass
class BrodenImage:
    """One index row: the image path, its mask PNG paths and its image-level labels (by category)."""

    image: Path
    masks: dict[str, list[Path]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)
    mask_size: tuple[int, int] | None = None


@dataclass
class BrodenIndex:
    root: Path
    images: list[BrodenImage]
    names: dict[int, str]          # label number -> name
    categories: dict[int, str]     # label number -> category (from label.csv, else the index column)


def decode_label_png(path: str | Path) -> np.ndarray:
    """A Broden mask PNG → int32 H×W labels, label = R + 256·G."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
    except (OSError, ValueError) as err:
        raise LeannetError(f"cannot read Broden mask {path} ({err}); fix or delete it") from err
    return rgb[..., 0] + 256 * rgb[..., 1]


def encode_label_png(labels: np.ndarray, path: str | Path) -> None:
    """Write int labels (< 65536) as a Broden mask PNG (R = label mod 256, G = label // 256)."""
    labels = np.asarray(labels)
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb, "RGB").save(path)


def _split(cell: str) -> list[str]:
    return [p.strip() for p in (cell or "").split(";") if p.strip()]


def read_index(root: str | Path, split: str | None = None) -> BrodenIndex:
    """Read ``index.csv`` and ``label.csv`` of a Broden folder (optionally one ``split`` only)."""
    root = Path(root)
    index, label_file = root / "index.csv", root / "label.csv"
    if not index.is_file() or not label_file.is_file():
        raise LeannetError(f"{root} is not a Broden folder: expected index.csv and label.csv (and images/)")
    names, categories = {}, {}
    with open(label_file, newline="") as f:
        for row in csv.DictReader(f):
            try:
                number = int(row["number"])
            except (KeyError, ValueError):
                raise LeannetError(f"{label_file}: every row needs an integer 'number' and a 'name'") from None
            names[number] = row.get("name") or str(number)
            if row.get("category"):
                categories[number] = row["category"].split(";")[0].split("(")[0].strip()
    images = []
    with open(index, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise LeannetError(f"{index}: the header must start with image,split,ih,iw,sh,sw,<categories>")
        concept_columns = [c for c in reader.fieldnames if c not in FIXED_COLUMNS]
        for row in reader:
            if split and row.get("split") and row["split"] != split:
                continue
            item = BrodenImage(root / "images" / row["image"])
            if row.get("sh") and row.get("sw"):
                item.mask_size = (int(row["sh"]), int(row["sw"]))
            for col in concept_columns:
                parts = _split(row.get(col, ""))
                if parts and all(p.isdigit() for p in parts):
                    item.labels[col] = [int(p) for p in parts]
                    for p in item.labels[col]:
                        categories.setdefault(p, col)
                elif parts:
                    item.masks[col] = [root / "images" / p for p in parts]
            images.append(item)
    if not images:
        raise LeannetError(f"{index} lists no images" + (f" in split '{split}'" if split else ""))
    return BrodenIndex(root, images, names, categories)


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map resized to ``size`` by nearest neighbour (labels are never blended)."""
    if labels.shape == tuple(size):
        return labels
    h, w = labels.shape
    ys = (np.arange(size[0]) * h) // size[0]
    xs = (np.arange(size[1]) * w) // size[1]
    return labels[ys[:, None], xs[None, :]]


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image as an H×W×3 uint8 RGB array resized (bilinear) to ``size``; unreadable is a one-line error."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    except (OSError, ValueError) as err:
        raise LeannetError(f"cannot read Broden image {path} ({err}); fix or delete it") from err
