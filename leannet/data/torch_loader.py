"""The conventional path: PIL images, torchvision transforms and a torch DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from leannet.data.base import Split
from leannet.data.tensor_loader import AUGMENTATIONS
from leannet.errors import LeannetError


class PILDataset(Dataset):
    """Yields ``(transform(PIL image), label)`` from a uint8 split, as torchvision's MNIST does."""

    def __init__(self, split: Split, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        # H×W (grey) or H×W×3 arrays, the layouts Image.fromarray understands.
        images = split.images.permute(0, 2, 3, 1)
        self.arrays = (images[..., 0] if images.shape[-1] == 1 else images).contiguous().numpy()
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.arrays[i])), self.labels[i]


def pil_transform(image_size: tuple[int, int], augment: str, mean: Sequence[float], std: Sequence[float],
                  padding: int = 4) -> Callable[[Image.Image], torch.Tensor]:
    """The torchvision equivalent of TensorLoader's augmentation and normalisation."""
    from torchvision import transforms

    if augment not in AUGMENTATIONS:
        raise LeannetError(f"unknown augment '{augment}'; valid augments: {', '.join(AUGMENTATIONS)}")
    steps: list[object] = []
    if augment == "crop_flip":
        steps.append(transforms.RandomCrop(image_size, padding=padding))
    if augment in ("flip", "crop_flip"):
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


class _ChannelsLastCollate:
    def __call__(self, batch: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
        x, y = default_collate(batch)
        return [x.contiguous(memory_format=torch.channels_last), y]


def torch_loader(split: Split, batch_size: int, *, shuffle: bool = False, augment: str = "none",
                 padding: int = 4, mean: Sequence[float], std: Sequence[float], seed: int = 0,
                 drop_last: bool = False, num_workers: int = 0, channels_last: bool = False) -> DataLoader:
    """A torch DataLoader over ``split`` with torchvision transforms, shuffled by a seeded generator."""
    transform = pil_transform(tuple(split.images.shape[2:]), augment, mean, std, padding)
    return DataLoader(
        PILDataset(split, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=_ChannelsLastCollate() if channels_last else None,
        persistent_workers=num_workers > 0,
    )
