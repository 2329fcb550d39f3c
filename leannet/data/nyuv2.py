"""Reader (and writer) for NYU-v2 in the file layout of the AdaShare authors' data loader.

Layout under ``root``::

    nyu_v2_3task.json        {"train": [[img, seg, normal, depth], ...], "test": [...], ...}
    img/0001.png             RGB image
    seg/0001.png             8-bit grey class ids (0..39 for NYU-v2's 40 classes), 255 = ignore
    normal_mask/0001.png     8-bit RGB normals, v = round((n + 1) · 127) per channel x, y, z (0..254);
                             a pixel with any channel 255 is ignored (the authors' padding value)
    depth/0001.npy           float depth map (H×W); values <= 0 are invalid

Paths in the json are relative to ``root``. Their loader reads images with OpenCV (BGR order in
memory); this reader uses PIL and returns RGB, which is the same file content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leannet.data.base import one_line
from leannet.errors import LeannetError

INDEX_FILE = "nyu_v2_3task.json"
IGNORE = 255


@dataclass(frozen=True, eq=False)
class DenseSplit:
    """Images with dense labels for segmentation, depth and surface normals (numpy arrays)."""

    image: np.ndarray          # uint8 [N,3,H,W]
    segmentation: np.ndarray   # int64 [N,H,W]; -1 = ignore
    depth: np.ndarray          # float32 [N,H,W]; <= 0 invalid
    normals: np.ndarray        # float32 [N,3,H,W]; unit length where normal_valid
    normal_valid: np.ndarray   # bool [N,H,W]

    def __len__(self) -> int:
        return len(self.image)


def read_nyuv2(root: Path | str, mode: str = "train", size: int | tuple[int, int] | None = None) -> DenseSplit:
    """Read split ``mode`` (a key of ``nyu_v2_3task.json``) into memory.

    ``size`` (h, w) resizes every sample (bilinear image and depth, nearest labels); without it all
    images must have the same size.
    """
    root = Path(root)
    index = root / INDEX_FILE
    if not index.is_file():
        raise LeannetError(f"{index} not found; point root at the AdaShare-format NYU-v2 folder holding {INDEX_FILE}")
    try:
        info = json.loads(index.read_text())
    except (OSError, ValueError) as error:
        raise LeannetError(f"{index} is not valid json ({one_line(error)}); regenerate it") from error
    if mode not in info:
        raise LeannetError(f"split '{mode}' not in {index}; its splits are: {', '.join(sorted(info))}")
    entries = info[mode]
    if not entries:
        raise LeannetError(f"split '{mode}' of {index} lists no samples")
    hw = (size, size) if isinstance(size, int) else size
    samples = [_read_sample(root, entry, hw) for entry in entries]
    shapes = {s[0].shape for s in samples}
    if len(shapes) > 1:
        raise LeannetError(f"NYU-v2 images of split '{mode}' differ in size ({sorted(shapes)}); pass size=(h, w)")
    image, seg, normal, depth = (np.stack(x) for x in zip(*samples, strict=True))
    valid = (normal < IGNORE).all(-1)
    vec = normal.astype(np.float32) / 127.0 - 1.0
    length = np.linalg.norm(vec, axis=-1, keepdims=True)
    valid &= length[..., 0] > 0.5
    vec = np.where(valid[..., None], vec / np.maximum(length, 1e-6), 0.0).astype(np.float32)
    return DenseSplit(
        image=np.ascontiguousarray(image.transpose(0, 3, 1, 2)),
        segmentation=np.where(seg == IGNORE, -1, seg.astype(np.int64)),
        depth=depth.astype(np.float32),
        normals=np.ascontiguousarray(vec.transpose(0, 3, 1, 2)),
        normal_valid=valid,
    )


def _read_sample(root: Path, entry: list[str], hw: tuple[int, int] | None) -> tuple[np.ndarray, ...]:
    if len(entry) != 4:
        raise LeannetError(f"{INDEX_FILE} entry {entry} must list 4 paths: image, seg, normal, depth")
    img_path, seg_path, normal_path, depth_path = (root / p for p in entry)
    try:
        image = _png(img_path, "RGB", hw, Image.Resampling.BILINEAR)
        seg = _png(seg_path, "L", hw, Image.Resampling.NEAREST)
        normal = _png(normal_path, "RGB", hw, Image.Resampling.NEAREST)
        depth = np.load(depth_path, allow_pickle=False).astype(np.float32).squeeze()
    except (OSError, ValueError) as error:
        raise LeannetError(f"cannot read NYU-v2 sample {entry} under {root} ({one_line(error)})") from error
    if hw is not None and depth.shape != hw:
        depth = np.asarray(Image.fromarray(depth).resize(hw[::-1], Image.Resampling.BILINEAR))
    if not (image.shape[:2] == seg.shape == normal.shape[:2] == depth.shape):
        raise LeannetError(f"NYU-v2 sample {entry}: image, seg, normal and depth sizes differ")
    return image, seg, normal, depth


def _png(path: Path, mode: str, hw: tuple[int, int] | None, resample: Image.Resampling) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert(mode)
        if hw is not None and im.size != hw[::-1]:
            im = im.resize(hw[::-1], resample)
        return np.asarray(im)


def write_nyuv2(root: Path | str, mode: str, image: np.ndarray, segmentation: np.ndarray, depth: np.ndarray,
                normals: np.ndarray, normal_valid: np.ndarray | None = None) -> None:
    """Write samples in the authors' layout (e.g. procedural scenes, for their code) and add them to the
    index as split ``mode``. Arrays as in ``DenseSplit``; segmentation -1 is written as 255."""
    root = Path(root)
    for sub in ("img", "seg", "normal_mask", "depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    index = root / INDEX_FILE
    info = json.loads(index.read_text()) if index.is_file() else {}
    entries = []
    valid = np.ones(depth.shape, bool) if normal_valid is None else normal_valid
    for i in range(len(image)):
        name = f"{mode}_{i:05d}"
        paths = [f"img/{name}.png", f"seg/{name}.png", f"normal_mask/{name}.png", f"depth/{name}.npy"]
        Image.fromarray(np.ascontiguousarray(image[i].transpose(1, 2, 0))).save(root / paths[0])
        Image.fromarray(np.where(segmentation[i] < 0, IGNORE, segmentation[i]).astype(np.uint8)).save(root / paths[1])
        code = np.clip(np.rint((normals[i].transpose(1, 2, 0) + 1.0) * 127.0), 0, 254).astype(np.uint8)
        code[~valid[i]] = IGNORE
        Image.fromarray(code).save(root / paths[2])
        np.save(root / paths[3], depth[i].astype(np.float32))
        entries.append(paths)
    info[mode] = entries
    tmp = index.with_suffix(".json.partial")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, index)
