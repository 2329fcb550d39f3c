"""N-MNIST event files (Orchard et al. 2015 binary format) binned into frames for spiking networks.

Each event is 5 bytes (40 bits, big-endian): x (8 bits), y (8 bits), polarity (1 bit, 1 = ON),
timestamp in µs (23 bits). `read_events` decodes a file, `events_to_frames` bins events into T
frames [T, 2, H, W] (channel 0 = OFF, 1 = ON), `bin_event_files` bins many files at once, and
`NMNIST` serves a ``Train/<digit>/*.bin`` folder as (frames, label) pairs. A `SpikingNet` takes a
batch of frames [B, T, 2, H, W] directly.

Importing this module registers the dataset ``nmnist``: the whole split binned into memory, so that
``data: {name: nmnist, augment: none, args: {steps: T}}`` trains like any other dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from leannet.data.base import DATASETS, Split, one_line
from leannet.data.paths import has_nmnist_split, nmnist_folder, nmnist_how_to
from leannet.errors import LeannetError

SENSOR = (34, 34)
DIGITS = [str(d) for d in range(10)]
COUNT_STATS = ((0.0, 0.0), (1 / 255, 1 / 255))
"""Mean and std that make the loaders' ``(x/255 − mean)/std`` the identity: frames stay 0/1 (or counts)."""
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
    return decode_events(_read_bin(Path(path)))


def _read_bin(path: Path) -> bytes:
    """The bytes of one event file; a missing, unreadable or truncated file is a one-line error naming it."""
    if not path.is_file():
        raise LeannetError(f"N-MNIST event file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise LeannetError(f"cannot read N-MNIST event file {path} ({one_line(error)})") from error
    if len(raw) % 5:
        raise LeannetError(f"N-MNIST event file {path} is corrupt or truncated: {len(raw)} bytes, not a multiple "
                           "of 5 (one event = 5 bytes); delete it and unzip it again")
    return raw


def _frame_index(events: dict[str, np.ndarray], steps: int, span: int, size: tuple[int, int],
                 offset: np.ndarray | int = 0) -> np.ndarray:
    """Flat index into [steps, 2, H, W] (plus ``offset``) of every event inside the window and the sensor."""
    h, w = size
    bins = events["t"] * steps // max(span, 1)
    keep = (bins < steps) & (events["x"] < w) & (events["y"] < h)
    flat = offset + ((bins * 2 + events["p"]) * h + events["y"]) * w + events["x"]
    return flat[keep]


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
        flat = _frame_index(events, steps, span, size)
        frames.index_add_(0, torch.from_numpy(flat), torch.ones(len(flat)))
    frames = frames.reshape(steps, 2, h, w)
    return frames.clamp_(max=1.0) if binary else frames


def bin_event_files(files: Sequence[Path], steps: int, duration_us: int, binary: bool = True,
                    size: tuple[int, int] = SENSOR, chunk: int = 512) -> np.ndarray:
    """`events_to_frames` of many files at once → uint8 [N, steps·2, H, W] (frame t, polarity p at
    channel 2t + p; counts clipped to 255), decoded ``chunk`` files at a time in single numpy calls."""
    h, w = size
    frames = np.zeros((len(files), steps * 2, h, w), np.uint8)
    flat_frames = frames.reshape(-1)
    for start in range(0, len(files), chunk):
        raws = [_read_bin(Path(f)) for f in files[start:start + chunk]]
        owner = np.repeat(np.arange(start, start + len(raws)), [len(r) // 5 for r in raws])
        index = _frame_index(decode_events(b"".join(raws)), steps, duration_us, size, owner * frames[0].size)
        if binary:
            flat_frames[index] = 1
        else:
            index, counts = np.unique(index, return_counts=True)
            flat_frames[index] = np.minimum(counts, 255)
    return frames


@DATASETS.register("nmnist")
def nmnist(root: Path, train: bool, steps: int = 30, duration_us: int = 300_000, binary: bool = True) -> Split:
    """N-MNIST: MNIST digits recorded by a moving 34×34 event camera, 10 classes, 60k train / 10k test.

    Reads ``root/NMNIST/{Train,Test}/<digit>/*.bin`` (the authors' Train.zip/Test.zip, unzipped) and
    bins the first ``duration_us`` µs of every recording (a sample lasts ≈300 ms: three saccades)
    into ``steps`` frames of OFF/ON events; ``binary``: 1 where a pixel had an event in the bin,
    else the count (clipped to 255). Held in memory as uint8 N×(steps·2)×34×34 (``Split.steps``):
    70 000 × steps × 2312 bytes, 4.9 GB at the default 30 steps, 16.2 GB at the paper's 100 (and
    carving a validation split copies the training part once more while loading).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LeannetError(f"dataset 'nmnist' needs data.args.steps >= 1 time bins, got {steps}")
    if isinstance(duration_us, bool) or not isinstance(duration_us, int) or duration_us < 1:
        raise LeannetError(f"dataset 'nmnist' needs data.args.duration_us >= 1 µs, got {duration_us}")
    folder = nmnist_folder(root)
    split = "Train" if train else "Test"
    if not has_nmnist_split(folder, split):
        raise LeannetError(f"N-MNIST not found: no {split}/<digit>/*.bin files in {folder}; "
                           f"run `leannet data fetch nmnist` (needs internet) or {nmnist_how_to(folder)}")
    files = sorted((folder / split).glob("[0-9]/*.bin"))
    labels = torch.tensor([int(f.parent.name) for f in files], dtype=torch.int64)
    frames = torch.from_numpy(bin_event_files(files, steps, duration_us, binary))
    return Split(frames, labels, DIGITS, *COUNT_STATS, steps=steps)


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
