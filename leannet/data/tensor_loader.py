"""A DataLoader replacement for datasets that fit in memory: whole-batch tensor augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from leannet.errors import LeannetError

AUGMENTATIONS = ("none", "flip", "crop_flip")


def shard_indices(perm: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``perm``: every ``world_size``-th index, truncated so all ranks get
    the same number (up to ``world_size - 1`` trailing indices are dropped)."""
    return perm[rank::world_size][: len(perm) // world_size]


def crop_flip(padded: torch.Tensor, idx: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
              flip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gather images ``idx`` of ``padded`` (N×C×Hp×Wp), each cropped to ``size`` at its own
    ``(top, left)`` offset and mirrored left-right where ``flip`` is true, in one indexing op."""
    _, c, hp, wp = padded.shape
    h, w = size
    cols = torch.arange(w)
    cols = left[:, None] + torch.where(flip[:, None], cols.flip(0), cols)  # B×w
    rows = top[:, None] + torch.arange(h)  # B×h
    # Flat offsets into the contiguous padded tensor, broadcast to B×C×h×w.
    flat = ((idx * (c * hp * wp))[:, None, None, None] + (torch.arange(c) * (hp * wp))[None, :, None, None]
            + (rows * wp)[:, None, :, None] + cols[:, None, None, :])
    return torch.take(padded, flat)


def _generator(*key: int) -> torch.Generator:
    seed = np.random.SeedSequence([k & 0xFFFF_FFFF_FFFF_FFFF for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class EpochSampler:
    """Holds the epoch of the next pass; PyTorch Lightning calls ``set_epoch`` on it every epoch."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass over the loader be epoch ``epoch``."""
        self.epoch = epoch


class TensorLoader:
    """Batches of ``(x float32 N×C×H×W, y int64)`` cut from one in-memory uint8 tensor.

    Augmentation (``"none"``, ``"flip"``, or ``"crop_flip"``: random crop after zero-padding by
    ``padding``, then horizontal flip) and normalisation run on whole batches as tensor ops.
    Epoch ``e``'s order and augmentation depend only on ``(seed, e)``: each pass uses
    ``sampler.epoch`` and then advances it, and ``set_epoch(e)`` selects the next pass's epoch.
    Under an initialised ``torch.distributed`` process group each rank gets an equal shard.

    ``steps`` > 0: each image packs that many frames into its channels (``Split.steps``); batches
    are then [B, steps, C/steps, H, W], normalised per frame channel (``mean``/``std`` of length 1 or
    C/steps), and ``augment`` must be ``"none"``.

    Batches are built with ``threads`` intra-op threads (None: torch's setting), restored before each
    batch is handed out: batch-sized ops gain little from more threads, and threads that wait on each
    other run several times slower when other processes share the cores.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: str = "none",
        padding: int = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        threads: int | None = 1,
        steps: int = 0,
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise LeannetError(f"unknown augment '{augment}'; valid augments: {', '.join(AUGMENTATIONS)}")
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 N×C×H×W with one label per image")
        if batch_size < 1 or padding < 0:
            raise ValueError(f"batch_size must be >= 1 and padding >= 0, got {batch_size} and {padding}")
        if steps < 0 or (steps and (images.shape[1] % steps or augment != "none")):
            raise ValueError(f"steps={steps} must divide the {images.shape[1]} channels, with augment='none'")
        self.steps = steps
        c = images.shape[1] // (steps or 1)
        mean_t = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float32).expand(c)
        std_t = torch.tensor(std if std is not None else [1.0], dtype=torch.float32).expand(c)
        self._scale = (1 / (255 * std_t)).view(c, 1, 1)
        self._shift = (-mean_t / std_t).view(c, 1, 1)
        self.batch_size = batch_size
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self.channels_last, self.threads = channels_last, threads
        self.padding = padding if augment == "crop_flip" else 0
        self.image_size: tuple[int, int] = tuple(images.shape[2:])
        p = self.padding
        self._source = F.pad(images, (p, p, p, p)).contiguous() if p else images.contiguous()
        self.labels = labels.long()
        self.sampler = EpochSampler()
        self.batch_sampler = None  # Lightning inspects it; batching is built in

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass over the loader be epoch ``epoch``."""
        self.sampler.set_epoch(epoch)

    def _num_samples(self) -> int:
        _, world = _rank_and_world()
        return len(self.labels) // world if world > 1 else len(self.labels)

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.sampler.epoch
        self.sampler.epoch = epoch + 1
        rank, world = _rank_and_world()
        n = len(self.labels)
        order = torch.randperm(n, generator=_generator(self.seed, epoch)) if self.shuffle else torch.arange(n)
        if world > 1:
            order = shard_indices(order, rank, world)
        augment_rng = _generator(self.seed, epoch, rank, 1)
        stop = len(self) * self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            with _intra_op_threads(self.threads):
                x = self._images(idx, augment_rng)
            yield x, self.labels[idx]

    def _images(self, idx: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.augment == "none":
            x = self._source[idx]
        else:
            b, p = len(idx), self.padding
            flip = torch.rand(b, generator=rng) < 0.5
            top = torch.randint(0, 2 * p + 1, (b,), generator=rng)
            left = torch.randint(0, 2 * p + 1, (b,), generator=rng)
            x = crop_flip(self._source, idx, top, left, flip, self.image_size)
        if self.steps:
            x = x.unflatten(1, (self.steps, -1))
        x = x.to(torch.float32).mul_(self._scale).add_(self._shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x
