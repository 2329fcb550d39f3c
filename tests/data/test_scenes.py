import time

import numpy as np
import pytest
import torch

from leannet.data import build_loaders
from leannet.data.scenes import (
    COLORS,
    MAX_OBJECTS,
    SCENE_TYPES,
    SHAPES,
    TEXTURES,
    load_scenes,
    make_scenes,
    object_layer,
    sample_layout,
)
from leannet.errors import LeannetError


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(64, seed=3, size=32)


def test_shapes_and_dtypes(scenes):
    n, s = 64, 32
    assert scenes.image.shape == (n, 3, s, s) and scenes.image.dtype == np.uint8
    for name in ("segmentation", "color", "shape", "texture", "instance"):
        assert getattr(scenes, name).shape == (n, s, s) and getattr(scenes, name).dtype == np.int64, name
    assert scenes.depth.dtype == np.float32 and scenes.normals.shape == (n, 3, s, s)
    assert scenes.edges.dtype == bool and scenes.scene.shape == (n,) and scenes.scene.dtype == np.int64
    assert scenes.segmentation.max() <= len(SHAPES) and scenes.segmentation.min() == 0
    assert scenes.color.min() >= 0 and scenes.color.max() < len(COLORS)
    assert scenes.texture.min() >= 0 and scenes.texture.max() < len(TEXTURES)
    assert set(np.unique(scenes.scene)) <= set(range(len(SCENE_TYPES)))
    # shape is -1 exactly on background, and segmentation = shape + 1 on objects
    assert np.array_equal(scenes.shape == -1, scenes.segmentation == 0)
    assert np.array_equal(scenes.segmentation[scenes.shape >= 0], scenes.shape[scenes.shape >= 0] + 1)
    assert len(scenes.subset(slice(0, 5))) == 5


def test_deterministic_given_seed():
    a, b, c = make_scenes(20, seed=1, size=24), make_scenes(20, seed=1, size=24), make_scenes(20, seed=2, size=24)
    for name in ("image", "segmentation", "depth", "normals", "edges", "color", "texture", "scene"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.image, c.image)


def test_normals_unit_length_and_facing_camera(scenes):
    norm = np.linalg.norm(scenes.normals, axis=1)
    assert np.abs(norm - 1).max() < 1e-5
    assert (scenes.normals[:, 2] >= -1e-6).all()  # visible surfaces never face away from the camera
    # background: wall faces the camera, floor faces up
    bg = scenes.segmentation == 0
    wall = bg & (scenes.depth == scenes.depth.max())
    assert np.allclose(scenes.normals.transpose(0, 2, 3, 1)[wall], [0, 0, 1])


def test_nearer_objects_occlude_farther_ones(scenes):
    layout = sample_layout(64, seed=3)
    masks, depths = zip(*[object_layer(layout, k, 32)[:2] for k in range(MAX_OBJECTS)], strict=True)
    masks, depths = np.stack(masks), np.stack(depths)
    covered = masks.any(0)
    assert np.array_equal(covered, scenes.segmentation > 0)  # objects always lie in front of the background
    nearest = np.where(masks, depths, np.inf).min(0)
    assert np.allclose(scenes.depth[covered], nearest[covered])
    assert np.array_equal(scenes.instance[covered] - 1, np.where(masks, depths, np.inf).argmin(0)[covered])
    overlaps = masks.sum(0) >= 2
    assert overlaps.sum() > 50  # the test must actually see occlusions
    # objects are nearer than the wall and floor behind them
    assert (scenes.depth[covered] < 10).all()


def test_edges_lie_on_segment_and_depth_jumps(scenes):
    inst, depth, edges = scenes.instance, scenes.depth, scenes.edges
    assert edges.any()
    # every edge pixel has a 4-neighbour of another instance that is farther away
    pad_inst = np.pad(inst, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    pad_depth = np.pad(depth, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ok = np.zeros_like(edges)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        n_inst = pad_inst[:, 1 + dy: 33 + dy, 1 + dx: 33 + dx]
        n_depth = pad_depth[:, 1 + dy: 33 + dy, 1 + dx: 33 + dx]
        ok |= (n_inst != inst) & (n_inst >= 0) & (n_depth > depth + 0.05)
    assert ok[edges].all()
    # every horizontal jump between instances is marked on one side
    jump = (inst[:, :, 1:] != inst[:, :, :-1]) & (np.abs(depth[:, :, 1:] - depth[:, :, :-1]) > 0.05)
    assert (edges[:, :, 1:] | edges[:, :, :-1])[jump].all()
    # occluding contours are mostly object outlines (floor in front of an object's foot can occlude it too)
    assert (scenes.segmentation[edges] > 0).mean() > 0.8


def test_scene_type_visible_in_background(scenes):
    # each scene type has its own floor texture and floor colours, so the background names the scene
    from leannet.data.scenes import _SCENE_STYLE

    for i in range(len(scenes)):
        walls, floors, texture, _ = _SCENE_STYLE[SCENE_TYPES[scenes.scene[i]]]
        floor = (scenes.segmentation[i] == 0) & (scenes.normals[i, 1] > 0.99)
        assert floor.any()
        assert set(scenes.texture[i][floor].tolist()) == {TEXTURES.index(texture)}
        assert {COLORS[c] for c in scenes.color[i][floor].tolist()} <= set(floors)
        wall = (scenes.segmentation[i] == 0) & (scenes.normals[i, 2] > 0.99)
        assert {COLORS[c] for c in scenes.color[i][wall].tolist()} <= set(walls)


def test_generation_speed():
    make_scenes(50, seed=0, size=32)
    start = time.process_time()
    make_scenes(1000, seed=0, size=32)
    assert time.process_time() - start < 5.0  # ~0.5 s on one core of the (loaded) dev machine


def test_load_scenes_caches(tmp_path):
    first = load_scenes(16, seed=5, size=16, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    second = load_scenes(16, seed=5, size=16, cache_dir=tmp_path)
    assert np.array_equal(first.segmentation, second.segmentation) and second.segmentation.dtype == np.int64
    # the run that writes the cache sees exactly what later runs read (it once saw unrounded normals)
    for name in ("image", "depth", "normals", "edges"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert np.abs(np.linalg.norm(second.normals, axis=1) - 1).max() < 1e-5
    assert np.array_equal(first.edges, second.edges) and np.array_equal(first.shape, second.shape)


def test_bad_arguments():
    with pytest.raises(LeannetError, match="size"):
        make_scenes(2, size=4)
    with pytest.raises(LeannetError, match="count"):
        make_scenes(-1)


def test_scenes_data_source(tmp_path):
    loaders = build_loaders("scenes", root=tmp_path, val_size=50, batch_size=32, augment="none",
                            train_count=200, test_count=40, size=16)
    assert loaders.info.num_classes == len(SCENE_TYPES) and loaders.info.in_channels == 3
    assert loaders.info.image_size == (16, 16) and loaders.info.class_names == list(SCENE_TYPES)
    x, y = next(iter(loaders.train))
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32 and y.max() < len(SCENE_TYPES)
    assert len(list((tmp_path / "scenes").glob("*.npz"))) == 2
