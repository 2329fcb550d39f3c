"""Dense multi-task data: the registered sources (scenes_tasks, nyuv2 from files in the authors' layout) and
the in-memory loader (shapes, normalisation, determinism, per-epoch plans, validation carve)."""

import numpy as np
import pytest
import torch

from leannet.data import build_loaders
from leannet.data.dense import DenseLoader, TaskSplit
from leannet.data.nyuv2 import write_nyuv2
from leannet.data.scenes import make_scenes
from leannet.errors import LeannetError


def split(n=10):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
    return TaskSplit(images, {"segmentation": torch.arange(n).view(n, 1, 1).expand(n, 4, 4).clone(),
                              "depth": torch.rand(n, 4, 4, generator=g)}, {"segmentation": n, "depth": 1})


def test_loader_batches_normalises_and_is_deterministic_per_epoch():
    loader = DenseLoader(split(), 4, shuffle=True, mean=(0.5,), std=(0.25,), seed=3, drop_last=True)
    assert len(loader) == 2
    first = list(loader)
    x, targets = first[0]
    assert x.shape == (4, 3, 4, 4) and set(targets) == {"segmentation", "depth"}
    ids = targets["segmentation"][:, 0, 0]
    expected = (split().images[ids].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)
    loader.set_epoch(0)
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(list(loader)[0][1]["segmentation"], first[0][1]["segmentation"])  # epoch 1 differs


def test_plan_picks_each_epochs_samples():
    loader = DenseLoader(split(), 2, shuffle=True, mean=(0.0,), std=(1.0,))
    loader.plan = lambda epoch: torch.tensor([0, 1, 2, 3]) if epoch % 2 == 0 else torch.tensor([7, 8])
    seen = [torch.cat([t["segmentation"][:, 0, 0] for _, t in loader]).sort().values.tolist() for _ in range(2)]
    assert seen == [[0, 1, 2, 3], [7, 8]]
    loader.set_epoch(0)
    assert len(loader) == 2
    loader.plan = None
    loader.set_subset(torch.tensor([5]))
    assert [t["segmentation"][0, 0, 0].item() for _, t in loader] == [5]
    with pytest.raises(LeannetError, match="must lie in 0..9"):
        loader.set_subset(torch.tensor([10]))


def test_scenes_tasks_through_build_loaders(tmp_path):
    loaders = build_loaders("scenes_tasks", root=tmp_path, batch_size=8, eval_batch_size=16, val_size=6,
                            augment="none", size=16, train_count=30, test_count=10, tasks=["depth", "normals"])
    assert loaders.info.tasks == {"depth": 1, "normals": 3} and loaders.info.image_size == (16, 16)
    x, targets = next(iter(loaders.train))
    assert x.shape == (8, 3, 16, 16) and targets["normals"].shape == (8, 3, 16, 16)
    assert sum(len(x) for x, _ in loaders.val) == 6 and sum(len(x) for x, _ in loaders.test) == 10
    assert abs(float(torch.cat([x for x, _ in loaders.test]).mean())) < 0.5
    with pytest.raises(LeannetError, match="set data.augment=none"):
        build_loaders("scenes_tasks", root=tmp_path, val_size=0, size=16, train_count=30, test_count=10)
    with pytest.raises(LeannetError, match="data.args.tasks"):
        build_loaders("scenes_tasks", root=tmp_path, val_size=0, augment="none", size=16, train_count=30,
                      test_count=10, tasks=["colour"])


def test_scenes_autoencoding_target_is_the_raw_image(tmp_path):
    loaders = build_loaders("scenes_tasks", root=tmp_path, batch_size=8, eval_batch_size=16, val_size=0,
                            augment="none", size=16, train_count=30, test_count=10, tasks=["autoencoding"])
    assert loaders.info.tasks == {"autoencoding": 3}
    x, targets = next(iter(loaders.test))
    raw = targets["autoencoding"]
    assert raw.dtype == torch.uint8 and raw.shape == x.shape
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))  # the input is the same image, normalised per channel
    z = (raw.float() - raw.float().mean((0, 2, 3), keepdim=True)) / raw.float().std((0, 2, 3), keepdim=True)
    assert torch.allclose((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), z, atol=1e-3)


def test_nyuv2_is_registered_and_reads_the_authors_layout(tmp_path):
    scenes = make_scenes(6, seed=0, size=16)
    seg = np.where(scenes.segmentation > 0, scenes.segmentation + 10, scenes.segmentation)  # NYU ids up to 39
    write_nyuv2(tmp_path / "nyuv2", "train", scenes.image, seg, scenes.depth, scenes.normals)
    write_nyuv2(tmp_path / "nyuv2", "test", scenes.image[:2], seg[:2], scenes.depth[:2], scenes.normals[:2])
    loaders = build_loaders("nyuv2", root=tmp_path, batch_size=3, val_size=0, augment="none")
    assert loaders.info.tasks == {"segmentation": 40, "depth": 1, "normals": 3}
    _, targets = next(iter(loaders.test))
    assert torch.equal(targets["segmentation"], torch.from_numpy(seg[:2]))
    assert torch.allclose(targets["depth"], torch.from_numpy(scenes.depth[:2]), atol=1e-6)
    with pytest.raises(LeannetError, match="nyu_v2_3task.json not found"):
        build_loaders("nyuv2", root=tmp_path / "elsewhere", val_size=0, augment="none")
