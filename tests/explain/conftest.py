"""Shared helpers for the explain tests: the reference search from benchmarks/ and small probes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def reference():
    """benchmarks/explain_search.py as a module (its ``reference_search`` is the direct implementation)."""
    spec = importlib.util.spec_from_file_location("explain_search_bench", REPO / "benchmarks" / "explain_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_problem(rng: np.random.Generator, images: int = 12, size: int = 6, concepts: int = 9):
    """Random concept masks C×N×S×S of varied density and a unit correlated with some of them."""
    density = rng.uniform(0.05, 0.5, concepts)[:, None, None, None]
    masks = rng.random((concepts, images, size, size)) < density
    base = masks[rng.integers(concepts)] | (masks[rng.integers(concepts)] & ~masks[rng.integers(concepts)])
    unit = base ^ (rng.random(base.shape) < 0.1)
    return unit, masks


@pytest.fixture(scope="session")
def scene_like_probe():
    """Concept masks of procedural scenes: colour/shape/texture per pixel, scene type per image."""
    from leannet.explain.probes import scenes_probe

    try:
        probe = scenes_probe(count=64, seed=3, size=16, cache=False)
    except ImportError:  # scenes generator not available: the same kind of concepts from random layouts
        probe = synthetic_scene_probe(64, 16)
    masks = probe.masks(np.arange(len(probe)))
    return probe.concepts, masks


def synthetic_scene_probe(count: int, size: int, seed: int = 0):
    """Random rectangles coloured/shaped/textured, and a scene type per image (stand-in for scenes)."""
    from leannet.explain.probes import label_probe

    rng = np.random.default_rng(seed)
    colors = ["red", "green", "blue", "yellow"]
    shapes = ["sphere", "cube", "cylinder", "cone"]
    textures = ["plain", "stripes", "dots", "checks"]
    scenes = ["living_room", "kitchen", "garden", "beach"]
    maps = {k: rng.integers(0, 4, (count, size, size)) for k in ("color", "texture")}
    shape = np.full((count, size, size), -1)
    for i in range(count):
        for _ in range(3):
            y, x = rng.integers(0, size - 4, 2)
            h, w = rng.integers(2, 6, 2)
            shape[i, y : y + h, x : x + w] = rng.integers(4)
            maps["color"][i, y : y + h, x : x + w] = rng.integers(4)
    images = rng.integers(0, 255, (count, 3, size, size), dtype=np.uint8)
    return label_probe(images, {"color": (maps["color"], colors), "shape": (shape, shapes),
                                "texture": (maps["texture"], textures)},
                       {"scene": (rng.integers(0, 4, count), scenes)})
