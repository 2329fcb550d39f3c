import pytest
import torch

from leannet.data import Split, TensorLoader
from leannet.data import tensor_loader as tl
from leannet.data.torch_loader import torch_loader
from leannet.errors import LeannetError


def tiny() -> torch.Tensor:
    return torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.uint8).view(1, 1, 2, 3)


def crop(top: int, left: int, flip: bool) -> list:
    padded = torch.nn.functional.pad(tiny(), (1, 1, 1, 1))
    t = torch.tensor
    return tl.crop_flip(padded, t([0]), t([top]), t([left]), t([flip]), (2, 3))[0, 0].tolist()


def test_crop_golden_values():
    assert crop(1, 1, False) == [[1, 2, 3], [4, 5, 6]]
    assert crop(0, 0, False) == [[0, 0, 0], [0, 1, 2]]
    assert crop(2, 2, False) == [[5, 6, 0], [0, 0, 0]]
    assert crop(1, 1, True) == [[3, 2, 1], [6, 5, 4]]
    assert crop(1, 0, True) == [[2, 1, 0], [5, 4, 0]]


def test_crop_flip_matches_per_sample_reference():
    g = torch.Generator().manual_seed(0)
    padded = torch.randint(0, 256, (6, 3, 9, 11), dtype=torch.uint8, generator=g)
    idx = torch.tensor([5, 0, 3, 3])
    top, left = torch.tensor([0, 4, 2, 1]), torch.tensor([4, 0, 3, 2])
    flip = torch.tensor([True, False, True, False])
    out = tl.crop_flip(padded, idx, top, left, flip, (5, 7))
    for k in range(4):
        ref = padded[idx[k], :, top[k] : top[k] + 5, left[k] : left[k] + 7]
        assert torch.equal(out[k], ref.flip(-1) if flip[k] else ref)


def loader(n: int = 10, **kw) -> TensorLoader:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return TensorLoader(images, torch.arange(n), kw.pop("batch_size", 4), **kw)


def test_shapes_and_dtypes():
    x, y = next(iter(loader(augment="crop_flip", shuffle=True)))
    assert x.shape == (4, 3, 4, 4) and x.dtype == torch.float32
    assert y.shape == (4,) and y.dtype == torch.int64


def test_random_crop_shifts_content_in_and_pads_with_zeros():
    image = torch.arange(1, 37, dtype=torch.uint8).view(1, 1, 6, 6)
    images = image.expand(64, 1, 6, 6).contiguous()
    batches = TensorLoader(images, torch.zeros(64, dtype=torch.long), 64, augment="crop_flip", padding=2,
                           std=[1 / 255])
    x = next(iter(batches))[0].round().to(torch.uint8)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))[0, 0]
    crops = [padded[t : t + 6, s : s + 6] for t in range(5) for s in range(5)]
    crops += [c.flip(-1) for c in crops]
    assert all(any(torch.equal(out[0], c) for c in crops) for out in x)
    assert sum(not torch.equal(out[0], image[0, 0]) for out in x) > 40
    assert (x == 0).any()


def test_flip_only_mirrors():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    batches = TensorLoader(image.expand(64, 1, 4, 4), torch.zeros(64, dtype=torch.long), 64, augment="flip",
                           std=[1 / 255])
    x = next(iter(batches))[0].round().to(torch.uint8)
    flipped = [torch.equal(out, image[0].flip(-1)) for out in x]
    kept = [torch.equal(out, image[0]) for out in x]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_normalisation_golden_values():
    images = torch.tensor([0, 255, 51, 102], dtype=torch.uint8).view(1, 2, 1, 2)
    x, _ = next(iter(TensorLoader(images, torch.zeros(1, dtype=torch.long), 1, mean=[0.5, 0.2], std=[0.25, 0.4])))
    assert torch.allclose(x.flatten(), torch.tensor([-2.0, 2.0, 0.0, 0.5]), atol=1e-6)


def epoch_batches(batches: TensorLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(batches)


def test_same_seed_and_epoch_give_identical_batches():
    a, b = loader(shuffle=True, augment="crop_flip", seed=7), loader(shuffle=True, augment="crop_flip", seed=7)
    a.set_epoch(3)
    b.sampler.set_epoch(3)  # how Lightning reaches it
    for (xa, ya), (xb, yb) in zip(epoch_batches(a), epoch_batches(b), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_epochs_differ_and_advance_on_their_own():
    a = loader(shuffle=True, seed=7)
    first, second = torch.cat([y for _, y in a]), torch.cat([y for _, y in a])
    assert not torch.equal(first, second)
    resumed = loader(shuffle=True, seed=7)
    resumed.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in resumed]), second)
    other_seed = loader(shuffle=True, seed=8)
    assert not torch.equal(torch.cat([y for _, y in other_seed]), first)


def test_len_with_and_without_drop_last():
    assert len(loader(10, batch_size=4)) == 3
    assert sum(len(y) for _, y in loader(10, batch_size=4)) == 10
    assert len(loader(10, batch_size=4, drop_last=True)) == 2
    assert [len(y) for _, y in loader(10, batch_size=4, drop_last=True, shuffle=True)] == [4, 4]


def test_unshuffled_loader_keeps_order():
    assert torch.cat([y for _, y in loader(10)]).tolist() == list(range(10))


def test_shard_indices():
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shards = [tl.shard_indices(perm, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert shards[1].tolist() == perm[1::3][:3].tolist()
    together = torch.cat(shards)
    assert len(set(together.tolist())) == 9 and set(together.tolist()) <= set(perm.tolist())


def test_loader_shards_when_distributed(monkeypatch):
    monkeypatch.setattr(tl, "_rank_and_world", lambda: (1, 2))
    sharded = loader(11, batch_size=2, shuffle=True, seed=3)
    assert len(sharded) == 3
    seen = torch.cat([y for _, y in sharded])
    perm = torch.randperm(11, generator=tl._generator(3, 0))
    assert seen.tolist() == perm[1::2][:5].tolist()


def test_channels_last_and_threads_restored():
    threads = torch.get_num_threads()
    x, _ = next(iter(loader(augment="crop_flip", channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.get_num_threads() == threads


def test_unknown_augment_lists_valid_ones():
    with pytest.raises(LeannetError, match="none, flip, crop_flip"):
        loader(augment="mixup")


@pytest.mark.parametrize("channels", [1, 3])
def test_torch_loader_matches_tensor_loader_without_augmentation(channels):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, channels, 5, 6), dtype=torch.uint8, generator=g)
    split = Split(images, torch.arange(10), [str(i) for i in range(10)])
    mean, std = [0.3] * channels, [0.2] * channels
    fast = TensorLoader(images, split.labels, 4, mean=mean, std=std)
    slow = torch_loader(split, 4, mean=mean, std=std)
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert torch.allclose(xa, xb, atol=1e-5) and torch.equal(ya, yb)
    x, _ = next(iter(torch_loader(split, 4, shuffle=True, augment="crop_flip", mean=mean, std=std)))
    assert x.shape == (4, channels, 5, 6) and x.dtype == torch.float32


def test_lightning_drives_the_epoch(tmp_path):
    lightning = pytest.importorskip("lightning")

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(48, 10)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    train = loader(10, batch_size=4, shuffle=True, augment="crop_flip")
    train.sampler.epoch = 10  # Lightning must reset it to 0, 1
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Tiny(), train)
    assert trainer.global_step == 6 and train.sampler.epoch == 2
