"""The Broden reader on generated files (index.csv, label.csv, images/ with R + 256·G mask PNGs)."""

import numpy as np
import pytest
from PIL import Image

from leannet.data.broden import decode_label_png, encode_label_png, read_index
from leannet.errors import LeannetError
from leannet.explain.probes import broden_probe

LABELS = {1: ("red", "color"), 2: ("wall", "object"), 300: ("handle", "part"), 401: ("kitchen", "scene"),
          402: ("striped", "texture")}


def write_broden(root, count=4, size=8):
    """A tiny Broden folder: per image a colour mask, an object+part mask pair, a scene and a texture."""
    (root / "images").mkdir(parents=True)
    (root / "label.csv").write_text("number,name,category,frequency,coverage,syns\n0,-,,0,0,\n" + "".join(
        f"{n},{name},{cat}(1),1,1.0,\n" for n, (name, cat) in LABELS.items()))
    rows = ["image,split,ih,iw,sh,sw,color,object,part,material,scene,texture"]
    truth = []
    for i in range(count):
        rgb = np.full((size * 2, size * 2, 3), 40 * i, np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"im{i}.jpg")
        color = np.zeros((size, size), int)
        color[: i + 1, :] = 1
        obj = np.zeros((size, size), int)
        obj[:, : 2 + i] = 2
        part = np.zeros((size, size), int)
        part[-2:, -2:] = 300                                          # needs the G channel (300 = 44 + 256)
        encode_label_png(color, root / "images" / f"im{i}_color.png")
        encode_label_png(obj, root / "images" / f"im{i}_object.png")
        encode_label_png(part, root / "images" / f"im{i}_part.png")
        scene = "401" if i % 2 == 0 else ""
        rows.append(f"im{i}.jpg,train,{2 * size},{2 * size},{size},{size},im{i}_color.png,"
                    f"im{i}_object.png;im{i}_part.png,,,{scene},402")
        truth.append((color, obj, part, i % 2 == 0))
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return truth


def test_label_png_round_trip(tmp_path):
    labels = np.array([[0, 1, 255], [256, 300, 1000]])
    encode_label_png(labels, tmp_path / "m.png")
    assert (decode_label_png(tmp_path / "m.png") == labels).all()
    rgb = np.asarray(Image.open(tmp_path / "m.png"))
    assert rgb[1, 1].tolist() == [44, 1, 0]                           # 300 = 44 + 256·1


def test_read_index_and_probe(tmp_path):
    truth = write_broden(tmp_path)
    index = read_index(tmp_path)
    assert len(index.images) == 4 and index.names[300] == "handle" and index.categories[401] == "scene"
    first = index.images[0]
    assert len(first.masks["object"]) == 2 and first.labels == {"scene": [401], "texture": [402]}
    assert index.images[1].labels == {"texture": [402]}

    probe = broden_probe(tmp_path, image_size=16)
    assert probe.concepts == ["red", "wall", "handle", "kitchen", "striped"]
    assert probe.categories == ["color", "object", "part", "scene", "texture"]
    assert probe.images.shape == (4, 3, 16, 16) and probe.mask_size == (8, 8)
    masks = probe.masks(np.arange(4))
    for i, (color, obj, part, is_kitchen) in enumerate(truth):
        assert (masks[0, i] == (color == 1)).all()
        assert (masks[1, i] == (obj == 2)).all()
        assert (masks[2, i] == (part == 300)).all()
        assert masks[3, i].all() == is_kitchen and masks[3, i].any() == is_kitchen   # image-level
        assert masks[4, i].all()


def test_broden_errors(tmp_path):
    with pytest.raises(LeannetError, match="not a Broden folder"):
        read_index(tmp_path)
    write_broden(tmp_path)
    (tmp_path / "label.csv").write_text("number,name\n1,red\n")
    with pytest.raises(LeannetError, match="missing from label.csv"):
        broden_probe(tmp_path, image_size=8)
