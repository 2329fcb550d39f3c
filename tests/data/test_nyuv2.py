import json

import numpy as np
import pytest

from leannet.data.nyuv2 import read_nyuv2, write_nyuv2
from leannet.data.scenes import make_scenes
from leannet.errors import LeannetError


@pytest.fixture
def folder(tmp_path):
    scenes = make_scenes(5, seed=0, size=16)
    seg = scenes.segmentation.copy()
    seg[0, 0, :4] = -1
    valid = np.ones(seg.shape, bool)
    valid[1, 2:4, 2:4] = False
    write_nyuv2(tmp_path, "train", scenes.image, seg, scenes.depth, scenes.normals, valid)
    write_nyuv2(tmp_path, "test", scenes.image[:2], scenes.segmentation[:2], scenes.depth[:2], scenes.normals[:2])
    return tmp_path, scenes, seg, valid


def test_round_trip_in_authors_layout(folder):
    root, scenes, seg, valid = folder
    info = json.loads((root / "nyu_v2_3task.json").read_text())
    assert sorted(info) == ["test", "train"] and len(info["train"]) == 5
    img, seg_path, normal_path, depth_path = info["train"][0]
    assert img.startswith("img/") and seg_path.startswith("seg/") and normal_path.startswith("normal_mask/")
    assert depth_path.endswith(".npy")
    data = read_nyuv2(root, "train")
    assert len(data) == 5 and data.image.shape == (5, 3, 16, 16)
    assert np.array_equal(data.image, scenes.image)
    assert np.array_equal(data.segmentation, seg) and data.segmentation[0, 0, 0] == -1
    assert np.allclose(data.depth, scenes.depth)
    assert np.array_equal(data.normal_valid, valid)
    cos = (data.normals * scenes.normals).sum(1)[valid]
    assert cos.min() > 0.999  # 8-bit quantisation only
    assert np.allclose(np.linalg.norm(data.normals, axis=1)[valid], 1, atol=1e-5)
    assert len(read_nyuv2(root, "test")) == 2


def test_resize(folder):
    root, *_ = folder
    data = read_nyuv2(root, "train", size=8)
    assert data.image.shape == (5, 3, 8, 8) and data.depth.shape == (5, 8, 8) and data.segmentation.shape == (5, 8, 8)


def test_errors(folder, tmp_path_factory):
    root, *_ = folder
    with pytest.raises(LeannetError, match="splits are: test, train"):
        read_nyuv2(root, "val")
    with pytest.raises(LeannetError, match="nyu_v2_3task.json"):
        read_nyuv2(tmp_path_factory.mktemp("empty"))
    (root / "depth" / "train_00000.npy").unlink()
    with pytest.raises(LeannetError, match="cannot read"):
        read_nyuv2(root, "train")
