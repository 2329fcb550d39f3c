"""Probe datasets for dissection: images plus per-pixel and image-level concept masks.

A :class:`Probe` holds the images and gives the boolean masks of all concepts for any set of images
(``masks(index) -> C×n×H×W``), so nothing larger than a chunk of masks is ever materialised.

- ``scenes``: leannet's procedural scenes (:mod:`leannet.data.scenes`): colour, shape, texture, region
  (wall / floor, derived from the background pixels and depth) and edge (occlusion boundaries) are
  pixel concepts; the scene type is an image-level concept covering its whole image.
- ``broden:PATH``: a dataset in the Broden format (:mod:`leannet.data.broden`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leannet.errors import LeannetError


@dataclass
class Probe:
    """Probe images (uint8 N×3×H×W) and a function giving the concept masks (bool C×n×h×w) of any images."""

    images: np.ndarray
    concepts: list[str]
    categories: list[str]
    mask_size: tuple[int, int]
    masks: Callable[[np.ndarray], np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def unique_names(names: list[str], categories: list[str]) -> list[str]:
    """Concept names made unique by suffixing ``-category`` to names found in several categories."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [f"{n}-{c}" if counts[n] > 1 else n for n, c in zip(names, categories, strict=True)]


def label_probe(images: np.ndarray, pixel: dict[str, tuple[np.ndarray, list[str]]],
                image: dict[str, tuple[np.ndarray, list[str]]]) -> Probe:
    """A probe from integer label maps: ``pixel[category] = (N×H×W labels, names)`` (label i = names[i],
    negative = none) and ``image[category] = (N labels, names)`` for image-level concepts."""
    names, cats, getters = [], [], []
    size: tuple[int, int] | None = None
    for cat, (labels, vocab) in pixel.items():
        size = labels.shape[1:]
        for i, n in enumerate(vocab):
            names.append(n)
            cats.append(cat)
            getters.append((labels, i, True))
    for cat, (labels, vocab) in image.items():
        for i, n in enumerate(vocab):
            names.append(n)
            cats.append(cat)
            getters.append((labels, i, False))
    if size is None:
        raise LeannetError("a probe needs at least one pixel-level concept category")
    h, w = size

    def masks(index: np.ndarray) -> np.ndarray:
        out = np.empty((len(getters), len(index), h, w), bool)
        for c, (labels, i, is_pixel) in enumerate(getters):
            if is_pixel:
                out[c] = labels[index] == i
            else:
                out[c] = (labels[index] == i)[:, None, None]
        return out

    return Probe(images, unique_names(names, cats), cats, (h, w), masks)


def scenes_probe(count: int = 2000, seed: int = 12345, size: int = 32, cache_dir: str | Path | None = None,
                 cache: bool = True) -> Probe:
    """Procedural scenes as a probe: colours, shapes, textures (pixels) and scene types (images).

    Cached in ``cache_dir`` (default: the leannet data folder) unless ``cache`` is False.
    """
    from leannet.data.scenes import COLORS, SCENE_TYPES, SHAPES, TEXTURES, WALL_DEPTH, load_scenes, make_scenes

    s = load_scenes(count, seed=seed, size=size, cache_dir=cache_dir) if cache else make_scenes(count, seed, size)
    background = s.shape < 0  # derived here: wall (at the wall's depth) and floor (nearer) background pixels
    region = np.where(background, np.where(s.depth >= WALL_DEPTH, 0, 1), -1)
    return label_probe(
        s.image,
        {"color": (s.color, list(COLORS)), "shape": (s.shape, list(SHAPES)), "texture": (s.texture, list(TEXTURES)),
         "region": (region, ["wall", "floor"]), "edge": (np.where(s.edges, 0, -1), ["edge"])},
        {"scene": (s.scene, list(SCENE_TYPES))},
    )


def broden_probe(root: str | Path, image_size: int | tuple[int, int] = 224, mask_size: tuple[int, int] | None = None,
                 limit: int | None = None, split: str | None = None) -> Probe:
    """A Broden folder as a dissection probe: images resized to ``image_size``, label masks resized
    (nearest) to ``mask_size`` (default: the index's sh×sw), one concept per label number present.

    Pixel-level labels come from the mask PNGs; image-level labels (scene, texture) cover their image.
    """
    from leannet.data.broden import decode_label_png, load_image, read_index, resize_nearest

    index = read_index(root, split)
    items = index.images[:limit] if limit else index.images
    isize = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    msize = tuple(mask_size) if mask_size else (items[0].mask_size or isize)
    images = np.stack([load_image(it.image, isize) for it in items]).transpose(0, 3, 1, 2).copy()
    pixel_maps = [[resize_nearest(decode_label_png(p), msize) for ps in it.masks.values() for p in ps]
                  for it in items]
    image_labels = [[n for ls in it.labels.values() for n in ls] for it in items]
    present = sorted({int(v) for maps in pixel_maps for m in maps for v in np.unique(m)} - {0}
                     | {n for ls in image_labels for n in ls})
    unknown = [n for n in present if n not in index.names]
    if unknown:
        raise LeannetError(f"label numbers {unknown[:10]} are used in masks or index.csv but missing from label.csv")
    column = {n: i for i, n in enumerate(present)}
    cats = [index.categories.get(n, "label") for n in present]
    names = unique_names([index.names[n] for n in present], cats)

    def masks(which: np.ndarray) -> np.ndarray:
        out = np.zeros((len(present), len(which), *msize), bool)
        for j, i in enumerate(which):
            for m in pixel_maps[i]:
                for v in np.unique(m):
                    if v:
                        out[column[int(v)], j] |= m == v
            for n in image_labels[i]:
                out[column[n], j] = True
        return out

    return Probe(images, names, cats, msize, masks)


def load_probe(spec: str, count: int = 2000, size: int = 32, seed: int = 12345) -> Probe:
    """``scenes`` or ``broden:PATH`` → a :class:`Probe` (images resized to ``size`` for Broden)."""
    if spec == "scenes":
        return scenes_probe(count, seed, size)
    if spec.startswith("broden:"):
        return broden_probe(spec.split(":", 1)[1], image_size=size, limit=count)
    raise LeannetError(f"unknown probe '{spec}'; use scenes or broden:PATH (a folder holding index.csv)")
