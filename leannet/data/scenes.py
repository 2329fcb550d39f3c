"""Procedural multi-task scenes: small RGB images with aligned dense ground truth and concept masks.

Every image shows a wall and a floor seen by a pinhole camera and two to four objects (sphere, cube,
cylinder, cone) standing on the floor at different depths, occluding each other. Because the geometry is
analytic, every pixel gets exact labels for several dense tasks (for multi-task learning, AdaShare) and
for named concepts (for interpretability, Network Dissection):

- ``segmentation``: 0 = background (wall or floor), ``1 + SHAPES.index(shape)`` for object pixels;
- ``depth``: distance along the viewing axis (world units, wall at ``WALL_DEPTH``);
- ``normals``: unit surface normals in camera coordinates (x right, y up, z towards the camera);
- ``edges``: occlusion boundaries, marked on the occluding (nearer) side;
- ``color`` / ``shape`` / ``texture``: per-pixel concept indices into ``COLORS`` / ``SHAPES`` /
  ``TEXTURES``; ``shape`` is -1 on background pixels (wall and floor have no shape);
- ``scene``: the image-level scene type (index into ``SCENE_TYPES``). A scene type fixes the palette of
  the wall and floor, the floor texture and the mix of object shapes, so it can be read off the image.

>>> scenes = make_scenes(1000, seed=0, size=64)   # deterministic given (count, seed, size)
>>> scenes.image.shape, scenes.segmentation.shape
((1000, 3, 64, 64), (1000, 64, 64))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from leannet.data.base import DATASETS, Split
from leannet.errors import LeannetError

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "brown",
                           "white", "grey", "black")
RGB = np.array([(200, 40, 40), (50, 160, 60), (40, 70, 200), (230, 210, 50), (240, 130, 30), (130, 50, 170),
                (80, 200, 220), (240, 150, 190), (130, 85, 45), (235, 235, 235), (128, 128, 128), (30, 30, 30)],
               dtype=np.float32)
SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone")
TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots", "checks")
SCENE_TYPES: tuple[str, ...] = ("living_room", "kitchen", "garden", "beach")

# scene type -> (wall colours, floor colours, floor texture, shape probabilities in SHAPES order)
_SCENE_STYLE = {
    "living_room": (("white", "pink", "yellow"), ("brown",), "stripes", (0.15, 0.45, 0.30, 0.10)),
    "kitchen": (("white", "grey", "cyan"), ("white", "grey"), "checks", (0.15, 0.30, 0.45, 0.10)),
    "garden": (("cyan", "blue"), ("green",), "dots", (0.30, 0.10, 0.15, 0.45)),
    "beach": (("cyan", "blue"), ("yellow", "orange"), "plain", (0.50, 0.10, 0.20, 0.20)),
}
OBJECT_TEXTURE_P = (0.4, 0.2, 0.2, 0.2)
MAX_OBJECTS = 4
WALL_DEPTH = 10.0
CAMERA_HEIGHT = 1.2
FOCAL = 1.1  # focal length in image heights
EDGE_DEPTH_JUMP = 0.05
LIGHT = np.array([-0.5, 0.7, 0.8], dtype=np.float32) / np.linalg.norm([-0.5, 0.7, 0.8])
_UP_TILT = np.array([0.0, 1.0, 0.25], dtype=np.float32) / np.hypot(1.0, 0.25)      # cube/cylinder top
_FRONT_TILT = np.array([0.0, -0.25, 1.0], dtype=np.float32) / np.hypot(1.0, 0.25)  # cube front face
CACHE_VERSION = 1
_CHUNK = 512


@dataclass(frozen=True, eq=False)
class Scenes:
    """A batch of procedural scenes: images, dense task targets and concept masks (numpy arrays)."""

    image: np.ndarray         # uint8 [N,3,H,W]
    segmentation: np.ndarray  # int64 [N,H,W], 0 background, 1..len(SHAPES) object shape classes
    depth: np.ndarray         # float32 [N,H,W]
    normals: np.ndarray       # float32 [N,3,H,W], unit length
    edges: np.ndarray         # bool [N,H,W], occlusion boundaries (nearer side)
    color: np.ndarray         # int64 [N,H,W], index into COLORS
    shape: np.ndarray         # int64 [N,H,W], index into SHAPES, -1 on background
    texture: np.ndarray       # int64 [N,H,W], index into TEXTURES
    scene: np.ndarray         # int64 [N], index into SCENE_TYPES
    instance: np.ndarray      # int64 [N,H,W], 0 background, k = object slot k-1

    def __len__(self) -> int:
        return len(self.scene)

    def subset(self, index: np.ndarray | slice) -> Scenes:
        """The scenes at ``index`` (all fields sliced alike)."""
        return Scenes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def sample_layout(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw the scene parameters of ``count`` images (scene type, palette, objects) from ``seed``.

    Object slots beyond an image's object count have ``valid`` False. All arrays are per image
    ``[N]`` or per object slot ``[N, MAX_OBJECTS]``.
    """
    if count < 0:
        raise LeannetError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    n, k = count, MAX_OBJECTS
    scene = rng.integers(0, len(SCENE_TYPES), n)
    wall = np.empty(n, np.int64)
    floor = np.empty(n, np.int64)
    floor_tex = np.empty(n, np.int64)
    shape = np.empty((n, k), np.int64)
    pick_wall, pick_floor = rng.random(n), rng.random(n)
    pick_shape = rng.random((n, k))
    for t, name in enumerate(SCENE_TYPES):
        walls, floors, tex, probs = _SCENE_STYLE[name]
        sel = scene == t
        wall[sel] = np.array([COLORS.index(c) for c in walls])[(pick_wall[sel] * len(walls)).astype(int)]
        floor[sel] = np.array([COLORS.index(c) for c in floors])[(pick_floor[sel] * len(floors)).astype(int)]
        floor_tex[sel] = TEXTURES.index(tex)
        shape[sel] = np.searchsorted(np.cumsum(probs)[:-1], pick_shape[sel], side="right")
    return {
        "scene": scene, "wall_color": wall, "floor_color": floor, "floor_texture": floor_tex,
        "horizon": rng.uniform(0.28, 0.42, n),
        "valid": np.arange(k)[None, :] < rng.integers(2, k + 1, n)[:, None],
        "shape": shape,
        "color": rng.integers(0, len(COLORS), (n, k)),
        "texture": np.searchsorted(np.cumsum(OBJECT_TEXTURE_P)[:-1], rng.random((n, k)), side="right"),
        "z": rng.uniform(2.4, 7.0, (n, k)),
        "radius": rng.uniform(0.5, 0.95, (n, k)),
        "x": rng.uniform(0.08, 0.92, (n, k)),
    }


def object_layer(layout: dict[str, np.ndarray], slot: int, size: int, index: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render object ``slot`` of the images ``index`` (default all) alone.

    Returns ``(mask [n,H,W] bool, depth [n,H,W], normals [n,3,H,W], pattern [n,H,W] bool)``; the
    pattern is the object's texture (true where the texture darkens or lightens the colour). Invalid
    slots have an empty mask.
    """
    index = np.arange(len(layout["scene"])) if index is None else index
    n = len(index)
    mask = np.zeros((n, size, size), bool)
    depth = np.full((n, size, size), np.inf, np.float32)
    normals = np.zeros((n, 3, size, size), np.float32)
    pattern = np.zeros((n, size, size), bool)
    valid = layout["valid"][index, slot]
    for s in range(len(SHAPES)):
        local = np.nonzero(valid & (layout["shape"][index, slot] == s))[0]
        if len(local) == 0:
            continue
        rows = index[local]
        z, rad = layout["z"][rows, slot], layout["radius"][rows, slot]
        f = FOCAL * size
        r_px = f * rad / z                                         # pixel radius
        base = layout["horizon"][rows] * size + f * CAMERA_HEIGHT / (z + rad)  # floor row under the back
        cx, cy = layout["x"][rows, slot] * size, base - r_px
        grid = np.arange(size, dtype=np.float32) + 0.5
        u = ((grid[None, None, :] - cx[:, None, None]) / r_px[:, None, None]).astype(np.float32)
        v = ((grid[None, :, None] - cy[:, None, None]) / r_px[:, None, None]).astype(np.float32)
        u, v = np.broadcast_arrays(u, v)
        m, dz, nrm = _SHAPE_FUNCS[s](u, v)
        mask[local] = m
        depth[local] = np.where(m, z[:, None, None] + rad[:, None, None] * dz, np.inf)
        normals[local] = nrm * m[:, None]
        pattern[local] = _pattern(u, v, layout["texture"][rows, slot], 2.5) & m
    return mask, depth, normals, pattern


def _sphere(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = 1.0 - u * u - v * v
    m = q > 0
    nz = np.sqrt(np.clip(q, 0.0, 1.0))
    return m, -nz, np.stack([u, -v, nz], 1)


def _cube(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    front = (np.abs(u) <= 0.8) & (v >= -0.4) & (v <= 1.0)
    top = (v >= -1.0) & (v < -0.4) & (np.abs(u - (-0.4 - v) * 0.5) <= 0.8)
    dz = np.where(top, -0.8 + (-0.4 - v) / 0.6 * 1.6, -0.8).astype(np.float32)
    nrm = np.where(top[:, None], _UP_TILT[None, :, None, None], _FRONT_TILT[None, :, None, None])
    return front | top, dz, nrm.astype(np.float32)


def _cylinder(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cap = (u / 0.7) ** 2 + ((v + 0.75) / 0.25) ** 2 <= 1.0
    body = (np.abs(u) <= 0.7) & (v >= -0.75) & (v <= 1.0) & ~cap
    a = np.clip(u / 0.7, -1.0, 1.0)
    c = np.sqrt(1.0 - a * a)
    dz = np.where(cap, -0.7 * (v + 0.75) / 0.25, -0.7 * c).astype(np.float32)
    side = np.stack([a, np.zeros_like(a), c], 1)
    nrm = np.where(cap[:, None], _UP_TILT[None, :, None, None], side)
    return cap | body, dz, nrm.astype(np.float32)


def _cone(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = (v + 1.0) / 2.0                       # half width of the silhouette at this row
    m = (v <= 1.0) & (np.abs(u) < w)
    a = np.clip(u / np.maximum(w, 1e-6), -1.0, 1.0)
    c = np.sqrt(1.0 - a * a)
    sin_phi = 0.45                            # slope of the mantle
    cos_phi = np.sqrt(1 - sin_phi**2)
    nrm = np.stack([a * cos_phi, np.full_like(a, sin_phi), c * cos_phi], 1)
    return m, (-np.clip(w, 0, 1) * c).astype(np.float32), nrm.astype(np.float32)


_SHAPE_FUNCS = (_sphere, _cube, _cylinder, _cone)


def _pattern(tu: np.ndarray, tv: np.ndarray, texture: np.ndarray, freq: float) -> np.ndarray:
    """Texture pattern on surface coordinates: true where the texture marks the surface."""
    t = texture.reshape(-1, *([1] * (tu.ndim - 1)))
    su, sv = tu * freq, tv * freq
    stripes = np.floor(su + sv).astype(np.int64) % 2 == 0
    fu, fv = su - np.floor(su) - 0.5, sv - np.floor(sv) - 0.5
    dots = fu * fu + fv * fv < 0.09
    checks = (np.floor(su).astype(np.int64) + np.floor(sv).astype(np.int64)) % 2 == 0
    return np.where(t == 1, stripes, np.where(t == 2, dots, np.where(t == 3, checks, False)))


def _background(layout: dict[str, np.ndarray], index: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Wall and floor of images ``index``: depth, normals, colour, texture and pattern per pixel."""
    n = len(index)
    f = FOCAL * size
    rows = np.arange(size, dtype=np.float32)[None, :, None] + 0.5
    cols = np.arange(size, dtype=np.float32)[None, None, :] + 0.5
    horizon = (layout["horizon"][index] * size)[:, None, None]
    below = np.maximum(rows - horizon, 1e-3)
    floor_depth = f * CAMERA_HEIGHT / below
    is_floor = (rows > horizon) & (floor_depth < WALL_DEPTH)
    is_floor = np.broadcast_to(is_floor, (n, size, size))
    depth = np.where(is_floor, floor_depth, WALL_DEPTH).astype(np.float32)
    normals = np.where(is_floor[:, None], np.array([0, 1, 0], np.float32)[None, :, None, None],
                       np.array([0, 0, 1], np.float32)[None, :, None, None]).astype(np.float32)
    color = np.where(is_floor, layout["floor_color"][index, None, None], layout["wall_color"][index, None, None])
    texture = np.where(is_floor, layout["floor_texture"][index, None, None], 0)
    world_x = (cols - size / 2) * depth / f
    pattern = _pattern(world_x * 1.5, depth * 1.5, layout["floor_texture"][index], 1.0) & is_floor
    return {"depth": depth, "normals": normals, "color": color.astype(np.int64),
            "texture": texture.astype(np.int64), "pattern": pattern}


def render(layout: dict[str, np.ndarray], size: int = 64, seed: int = 0) -> Scenes:
    """Render ``layout`` (from ``sample_layout``) at ``size``×``size`` pixels with a z-buffer.

    Objects occlude each other by depth (nearest wins); objects always lie in front of the wall and
    floor (each stands with its back on the floor row of its depth). ``seed`` drives the pixel noise.
    """
    if size < 8:
        raise LeannetError(f"scene size must be >= 8 pixels, got {size}")
    count = len(layout["scene"])
    parts = [_render_chunk(layout, np.arange(a, min(a + _CHUNK, count)), size,
                           np.random.default_rng([seed, a])) for a in range(0, count, _CHUNK)]
    if not parts:
        parts = [_render_chunk(layout, np.arange(0), size, np.random.default_rng(seed))]
    return Scenes(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Scenes)})


def _render_chunk(layout: dict[str, np.ndarray], index: np.ndarray, size: int, rng: np.random.Generator
                  ) -> Scenes:
    bg = _background(layout, index, size)
    depth, normals, color, texture, pattern = bg["depth"], bg["normals"], bg["color"], bg["texture"], bg["pattern"]
    n = len(index)
    instance = np.zeros((n, size, size), np.int64)
    shape = np.full((n, size, size), -1, np.int64)
    zbuf = np.full((n, size, size), np.inf, np.float32)
    for slot in range(MAX_OBJECTS):
        m, d, nrm, pat = object_layer(layout, slot, size, index)
        win = m & (d < zbuf)
        zbuf = np.where(win, d, zbuf)
        depth = np.where(win, d, depth)
        normals = np.where(win[:, None], nrm, normals)
        instance[win] = slot + 1
        shape = np.where(win, layout["shape"][index, slot, None, None], shape)
        color = np.where(win, layout["color"][index, slot, None, None], color)
        texture = np.where(win, layout["texture"][index, slot, None, None], texture)
        pattern = np.where(win, pat, pattern)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    image = _shade(normals, color, pattern, rng)
    return Scenes(image=image, segmentation=np.where(shape >= 0, shape + 1, 0), depth=depth.astype(np.float32),
                  normals=normals.astype(np.float32), edges=occlusion_edges(instance, depth), color=color,
                  shape=shape, texture=texture, scene=layout["scene"][index].astype(np.int64), instance=instance)


def _shade(normals: np.ndarray, color: np.ndarray, pattern: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lambertian shading of the palette colour, the texture pattern, and mild pixel noise: uint8 N×3×H×W."""
    lambert = np.einsum("nchw,c->nhw", normals, LIGHT).clip(0, None)
    gain = np.where(pattern, 0.55, 1.0).astype(np.float32) * (0.35 + 0.65 * lambert)
    offset = np.where(pattern, _MARK[color], 0.0).astype(np.float32)  # texture marks: darker, or lighter on dark
    lit = _RGB_T[:, color] * gain[None] + offset[None]                 # 3×N×H×W
    lit += rng.standard_normal(lit.shape, dtype=np.float32) * 3.0
    return np.ascontiguousarray(np.clip(np.rint(lit), 0, 255).astype(np.uint8).transpose(1, 0, 2, 3))


_RGB_T = np.ascontiguousarray(RGB.T)
_MARK = np.where(RGB.mean(1) < 90, 0.45 * 255.0, 0.0).astype(np.float32)


def occlusion_edges(instance: np.ndarray, depth: np.ndarray, jump: float = EDGE_DEPTH_JUMP) -> np.ndarray:
    """Occlusion boundaries: pixels next to (4-neighbourhood) a different instance (object or background)
    whose depth is more than ``jump`` larger; the edge is drawn on the nearer, occluding pixel."""
    edges = np.zeros(instance.shape, bool)
    for axis in (-1, -2):
        a = [slice(None)] * instance.ndim
        b = [slice(None)] * instance.ndim
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        boundary = (instance[a] != instance[b]) & (np.abs(depth[a] - depth[b]) > jump)
        edges[a] |= boundary & (depth[a] < depth[b])
        edges[b] |= boundary & (depth[b] < depth[a])
    return edges


def make_scenes(count: int, seed: int = 0, size: int = 64) -> Scenes:
    """``count`` procedural scenes of ``size``×``size`` pixels, deterministic given ``(count, seed, size)``."""
    return render(sample_layout(count, seed), size, seed)


# ---- caching -------------------------------------------------------------------------------------------

_COMPACT = {"image": np.uint8, "segmentation": np.uint8, "depth": np.float32, "normals": np.float16,
            "edges": bool, "color": np.uint8, "shape": np.int8, "texture": np.uint8, "scene": np.uint8,
            "instance": np.uint8}


def load_scenes(count: int, seed: int = 0, size: int = 64, cache_dir: Path | str | None = None) -> Scenes:
    """``make_scenes(count, seed, size)``, cached as an npz file in ``cache_dir`` (default
    ``<leannet data root>/scenes``) in compact dtypes; normals are re-normalised after loading."""
    path = _cache_dir(cache_dir) / f"scenes-v{CACHE_VERSION}-n{count}-seed{seed}-{size}px.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return _from_compact({f.name: data[f.name] for f in fields(Scenes)})
        except Exception:  # a corrupt cache is regenerated, never trusted
            path.unlink(missing_ok=True)
    compact = {f.name: getattr(make_scenes(count, seed, size), f.name).astype(_COMPACT[f.name]) for f in fields(Scenes)}
    _atomic_savez(path, compact)
    return _from_compact(compact)  # the run that writes the cache sees the same values as every later run


def _from_compact(arrays: dict[str, np.ndarray]) -> Scenes:
    normals = arrays["normals"].astype(np.float32)
    arrays = {**arrays, "normals": normals / np.linalg.norm(normals, axis=1, keepdims=True)}
    return Scenes(**{k: (a if k in ("normals", "depth", "edges", "image") else a.astype(np.int64))
                     for k, a in arrays.items()})


def _cache_dir(cache_dir: Path | str | None) -> Path:
    from leannet.data.paths import data_root

    return Path(cache_dir) if cache_dir is not None else data_root() / "scenes"


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.partial")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@DATASETS.register("scenes")
def scenes_source(root: Path, train: bool, size: int = 32, train_count: int = 12000, test_count: int = 2000,
                  seed: int = 0) -> Split:
    """Procedural scenes as image classification: the label is the scene type (``SCENE_TYPES``).

    Train and test images come from different seeds (``seed`` and ``seed + 1_000_003``); both are
    cached under ``root/scenes``.
    """
    count, split_seed = (train_count, seed) if train else (test_count, seed + 1_000_003)
    path = Path(root) / "scenes" / f"scenes-cls-v{CACHE_VERSION}-n{count}-seed{split_seed}-{size}px.npz"
    images = labels = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                images, labels = data["image"], data["scene"]
        except Exception:
            path.unlink(missing_ok=True)
    if images is None:
        layout = sample_layout(count, split_seed)
        images = render(layout, size, split_seed).image
        labels = layout["scene"]
        _atomic_savez(path, {"image": images, "scene": labels.astype(np.uint8)})
    return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)),
                 list(SCENE_TYPES))
