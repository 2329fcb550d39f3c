"""N-MNIST event files: decoding, round trip, binning into frames, the folder dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leannet.errors import LeannetError
from leannet.spiking.data import NMNIST, decode_events, encode_events, events_to_frames, read_events


def test_decode_known_bytes():
    # x 3, y 7, ON, t = 0x012345 µs  → bytes 03 07 (0x80 | 0x01) 0x23 0x45
    ev = decode_events(bytes([3, 7, 0x81, 0x23, 0x45, 33, 0, 0x00, 0x00, 0x10]))
    assert ev["x"].tolist() == [3, 33] and ev["y"].tolist() == [7, 0]
    assert ev["p"].tolist() == [1, 0] and ev["t"].tolist() == [0x012345, 16]
    with pytest.raises(LeannetError, match="multiple of 5"):
        decode_events(b"1234")


def _random_events(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"x": rng.integers(0, 34, n), "y": rng.integers(0, 34, n), "p": rng.integers(0, 2, n),
            "t": np.sort(rng.integers(0, 300_000, n))}


def test_round_trip_and_frames(tmp_path):
    rng = np.random.default_rng(0)
    ev = _random_events(rng, 500)
    path = tmp_path / "00001.bin"
    path.write_bytes(encode_events(ev["x"], ev["y"], ev["p"], ev["t"]))
    back = read_events(path)
    assert all(np.array_equal(back[k], ev[k]) for k in ev)
    counts = events_to_frames(back, steps=10, duration_us=300_000, binary=False)
    assert counts.shape == (10, 2, 34, 34) and counts.sum() == 500
    # each event lands in its bin, polarity channel and pixel
    i = 123
    b = ev["t"][i] * 10 // 300_000
    assert counts[b, ev["p"][i], ev["y"][i], ev["x"][i]] >= 1
    binary = events_to_frames(back, steps=10, duration_us=300_000)
    assert torch.equal(binary, (counts > 0).float())
    late = events_to_frames(back, steps=4, duration_us=150_000, binary=False)
    assert late.sum() == int((ev["t"] < 150_000).sum())  # events after the window are dropped


def test_nmnist_folder(tmp_path):
    rng = np.random.default_rng(1)
    for digit in (3, 5):
        folder = tmp_path / "Train" / str(digit)
        folder.mkdir(parents=True)
        ev = _random_events(rng, 50)
        (folder / "1.bin").write_bytes(encode_events(ev["x"], ev["y"], ev["p"], ev["t"]))
    ds = NMNIST(tmp_path, train=True, steps=6)
    frames, label = ds[1]
    assert len(ds) == 2 and label == 5 and frames.shape == (6, 2, 34, 34)
    with pytest.raises(LeannetError, match="no N-MNIST files"):
        NMNIST(tmp_path, train=False)
