"""Lay out the Knowledge Evolution paper's small datasets as image folders for `data.name: imagefolder`.

    python scripts/fgvc_to_imagefolder.py flowers102 data/flowers102 [--download]   # torchvision Flowers102
    python scripts/fgvc_to_imagefolder.py aircraft data/aircraft [--download]       # torchvision FGVCAircraft
    python scripts/fgvc_to_imagefolder.py cub data/cub --source CUB_200_2011/       # the CUB-200-2011 tarball

Writes `OUT/train/<class>/` and `OUT/test/<class>/` of symbolic links to the original images (nothing is
copied). Splits: Flowers102 train+val / test, Aircraft trainval / test (variant level, 100 classes),
CUB the official train_test_split.txt. Not run in this repository's CI (the datasets are not stored here).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _link(pairs: list[tuple[Path, str]], folder: Path) -> int:
    for path, label in pairs:
        target = folder / label.replace("/", "_") / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(Path(path).resolve(), target)
    return len(pairs)


def torchvision_pairs(name: str, root: Path, download: bool) -> dict[str, list[tuple[Path, str]]]:
    from torchvision import datasets

    if name == "flowers102":
        splits = {"train": ["train", "val"], "test": ["test"]}
        make = lambda split: datasets.Flowers102(root, split=split, download=download)  # noqa: E731
    else:
        splits = {"train": ["trainval"], "test": ["test"]}
        make = lambda split: datasets.FGVCAircraft(root, split=split, download=download)  # noqa: E731
    out: dict[str, list[tuple[Path, str]]] = {}
    for folder, names in splits.items():
        out[folder] = []
        for split in names:
            ds = make(split)
            files, labels = ds._image_files, ds._labels  # torchvision keeps both lists (private names)
            out[folder] += [(Path(f), f"{int(y):03d}") for f, y in zip(files, labels, strict=True)]
    return out


def cub_pairs(source: Path) -> dict[str, list[tuple[Path, str]]]:
    images = dict(line.split() for line in (source / "images.txt").read_text().splitlines() if line.strip())
    is_train = dict(line.split() for line in (source / "train_test_split.txt").read_text().splitlines() if line)
    out: dict[str, list[tuple[Path, str]]] = {"train": [], "test": []}
    for key, rel in images.items():
        out["train" if is_train[key] == "1" else "test"].append((source / "images" / rel, rel.split("/")[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["flowers102", "aircraft", "cub"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, default=Path("data/raw"), help="torchvision root or CUB folder")
    parser.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    args = parser.parse_args()
    pairs = cub_pairs(args.source) if args.dataset == "cub" else torchvision_pairs(args.dataset, args.source,
                                                                                    args.download)
    for folder, items in pairs.items():
        print(f"{args.dataset} {folder}: {_link(items, args.out / folder)} images")


if __name__ == "__main__":
    main()
