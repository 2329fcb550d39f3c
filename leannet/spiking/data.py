"""N-MNIST event files (Orchard et al. 2015 binary format) binned into frames for spiking networks.

Each event is 5 bytes (40 bits, big-endian): x (8 bits), y (8 bits), polarity (1 bit, 1 = ON),
timestamp in µs (23 bits). `read_events` decodes a file, `events_to_frames` bins events into T
frames [T, 2, H, W] (channel 0 = OFF, 1 = ON), and `NMNIST` serves a ``Train/<digit>/*.bin`` folder
as (frames, label) pairs. A `SpikingNet` takes a batch of frames [B, T, 2, H, W] directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from leannet.errors import LeannetError

SENSOR = (34, 34)
_TIME_MASK = (1 << 23) - 1


def decode_events(raw: bytes | np.ndarray) -> dict[str, np.ndarray]:
    """Decode N-MNIST bytes into arrays ``x``, ``y``, ``p`` (0/1) and ``t`` (µs), one entry per event."""
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes | bytearray) else np.asarray(raw, np.uint8)
    if data.size % 5:
        raise LeannetError(f"N-MNIST data has {data.size} bytes, not a multiple of 5 (one event = 5 bytes)")
    ev = data.reshape(-1, 5).astype(np.int64)
    return {
        "x": ev[:, 0],
        "y": ev[:, 1],
        "p": ev[:, 2] >> 7,
        "t": ((ev[:, 2] << 16) | (ev[:, 3] << 8) | ev[:, 4]) & _TIME_MASK,
    }


def encode_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> bytes:
    """The inverse of `decode_events` (used to write test files); values must fit the format."""
    x, y, p, t = (np.asarray(v, np.int64) for v in (x, y, p, t))
    if (x.min(initial=0) < 0 or x.max(initial=0) > 255 or y.min(initial=0) < 0 or y.max(initial=0) > 255
            or not np.isin(p, (0, 1)).all() or t.min(initial=0) < 0 or t.max(initial=0) > _TIME_MASK):
        raise LeannetError("events out of range: x, y in 0..255, p in {0, 1}, t in 0..2^23-1 µs")
    out = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 255, t & 255], axis=1).astype(np.uint8)
    return out.tobytes()


def read_events(path: str | Path) -> dict[str, np.ndarray]:
    """Read one N-MNIST ``.bin`` file (see `decode_events`)."""
    path = Path(path)
    if not path.is_file():
        raise LeannetError(f"N-MNIST event file not found: {path}")
    return decode_events(path.read_bytes())


def events_to_frames(events: dict[str, np.ndarray], steps: int, size: tuple[int, int] = SENSOR,
                     duration_us: int | None = None, binary: bool = True) -> Tensor:
    """Bin events into ``steps`` equal time windows → float frames [T, 2, H, W].

    The window is ``duration_us`` (default: up to the last event); events after it are dropped, as
    are events outside ``size``. ``binary``: 1 where a pixel had any event in the bin, else counts.
    """
    if steps < 1:
        raise LeannetError(f"need at least one time bin, got {steps}")
    h, w = size
    frames = torch.zeros(steps * 2 * h * w, dtype=torch.float32)
    t = events["t"]
    if t.size:
        span = int(duration_us) if duration_us is not None else int(t.max()) + 1
        bins = t * steps // max(span, 1)
        keep = (bins < steps) & (events["x"] < w) & (events["y"] < h)
        flat = ((bins * 2 + events["p"]) * h + events["y"]) * w + events["x"]
        frames.index_add_(0, torch.from_numpy(flat[keep]), torch.ones(int(keep.sum())))
    frames = frames.reshape(steps, 2, h, w)
    return frames.clamp_(max=1.0) if binary else frames


class NMNIST(Dataset):
    """N-MNIST from its unzipped folders ``root/{Train,Test}/<digit>/*.bin`` as ([T, 2, 34, 34], label)."""

    def __init__(self, root: str | Path, train: bool = True, steps: int = 100,
                 duration_us: int | None = 300_000, binary: bool = True) -> None:
        folder = Path(root) / ("Train" if train else "Test")
        self.files = sorted(folder.glob("[0-9]/*.bin"))
        if not self.files:
            raise LeannetError(f"no N-MNIST files in {folder}; expected {folder}/<digit>/<id>.bin")
        self.steps, self.duration_us, self.binary = steps, duration_us, binary

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path = self.files[i]
        frames = events_to_frames(read_events(path), self.steps, SENSOR, self.duration_us, self.binary)
        return frames, int(path.parent.name)
