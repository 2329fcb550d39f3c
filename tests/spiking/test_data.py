"""N-MNIST event files: decoding, round trip, binning into frames, the folder dataset, the registered
dataset ``nmnist`` (loaders, errors, fetch) and a training run of its recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leannet.cli import main
from leannet.data import Split, build_loaders, fetch
from leannet.data.base import load_split
from leannet.errors import LeannetError
from leannet.spiking.data import NMNIST, decode_events, encode_events, events_to_frames, read_events


def one_line_error(match: str) -> pytest.RaisesExc:
    """pytest.raises for a LeannetError matching ``match`` (the tests check it is one line)."""
    return pytest.raises(LeannetError, match=match)


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


# ---- the registered dataset `nmnist`: a tiny folder in the real binary format ----

REPO = Path(__file__).resolve().parents[2]


def write_nmnist(root: Path, digits: dict[str, list[int]], seed: int = 0) -> dict[Path, dict[str, np.ndarray]]:
    """``root/NMNIST/<split>/<digit>/<i>.bin`` for every digit listed per split (one file per entry)."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, labels in digits.items():
        for i, digit in enumerate(labels):
            ev = _random_events(rng, 80)
            ev["t"][-5:] = 320_000 + np.arange(5)  # after the 300 ms window
            ev["x"][0] = 40  # off the 34×34 sensor
            path = root / "NMNIST" / split / str(digit) / f"{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_events(ev["x"], ev["y"], ev["p"], ev["t"]))
            written[path] = ev
    return written


def test_nmnist_source_bins_every_file_like_the_reference(tmp_path):
    files = write_nmnist(tmp_path, {"Train": [7, 3, 5, 3], "Test": [1]})
    split = load_split("nmnist", tmp_path, True, steps=6)
    assert split.images.dtype == torch.uint8 and split.images.shape == (4, 12, 34, 34) and split.steps == 6
    assert split.labels.tolist() == [3, 3, 5, 7] and split.class_names == [str(d) for d in range(10)]
    ordered = sorted(p for p in files if p.parts[-3] == "Train")
    reference = torch.stack([events_to_frames(read_events(p), 6, duration_us=300_000) for p in ordered])
    assert torch.equal(split.images.float().view(4, 6, 2, 34, 34), reference)
    assert 0 < int(split.images.sum()) < sum(len(files[p]["t"]) for p in ordered)  # late / off-sensor dropped
    counts = load_split("nmnist", tmp_path, True, steps=6, binary=False)
    reference = torch.stack([events_to_frames(read_events(p), 6, duration_us=300_000, binary=False)
                             for p in ordered])
    assert torch.equal(counts.images.float().view(4, 6, 2, 34, 34), reference) and counts.images.max() > 1
    assert len(load_split("nmnist", tmp_path, False, steps=6)) == 1


def test_nmnist_counts_clip_at_255(tmp_path):
    path = tmp_path / "NMNIST" / "Train" / "4" / "1.bin"
    path.parent.mkdir(parents=True)
    n = 300
    path.write_bytes(encode_events(np.full(n, 2), np.full(n, 9), np.ones(n, int), np.arange(n)))
    frames = load_split("nmnist", tmp_path, True, steps=2, binary=False).images
    assert frames[0, 1, 9, 2] == 255 and int(frames.sum()) == 255  # frame 0, ON channel, y 9, x 2


def test_nmnist_loaders_yield_unnormalised_event_frames(tmp_path):
    write_nmnist(tmp_path, {"Train": [0, 1, 2, 3, 4], "Test": [5, 6, 7]})
    loaders = build_loaders("nmnist", root=tmp_path, batch_size=2, eval_batch_size=2, val_size=1, augment="none",
                            steps=5)
    info = loaders.info
    assert (info.in_channels, info.image_size, info.steps, info.num_classes) == (2, (34, 34), 5, 10)
    x, y = next(iter(loaders.train))
    assert x.dtype == torch.float32 and x.shape == (2, 5, 2, 34, 34) and y.dtype == torch.int64
    assert set(x.unique().tolist()) == {0.0, 1.0}
    test = load_split("nmnist", tmp_path, False, steps=5)
    batches = list(loaders.test)
    assert torch.equal(torch.cat([b[0] for b in batches]), test.images.float().view(3, 5, 2, 34, 34))
    assert torch.cat([b[1] for b in batches]).tolist() == [5, 6, 7]
    for bad in ({"augment": "crop_flip"}, {"augment": "none", "loader": "torch"}):
        with pytest.raises(LeannetError, match="event frames .* set data.augment=none") as error:
            build_loaders("nmnist", root=tmp_path, val_size=1, steps=5, **bad)
        assert "\n" not in str(error.value)


def test_event_split_steps_must_divide_the_channels():
    with pytest.raises(ValueError, match="steps=3 must be 0 or divide the 4 channels"):
        Split(torch.zeros(1, 4, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64), ["a"], steps=3)


def test_nmnist_missing_or_corrupt_data_is_one_line_naming_the_place(tmp_path):
    with one_line_error("N-MNIST not found") as error:
        load_split("nmnist", tmp_path, True)
    message = str(error.value)
    assert "\n" not in message and f"in {tmp_path / 'NMNIST'};" in message and "Train.zip and Test.zip" in message
    assert "leannet data fetch nmnist" in message
    files = write_nmnist(tmp_path, {"Train": [2, 8]})
    bad = sorted(files)[1]
    bad.write_bytes(bad.read_bytes()[:-3])
    with one_line_error(f"N-MNIST event file {bad} is corrupt or truncated") as error:
        load_split("nmnist", tmp_path, True)
    assert "\n" not in str(error.value)
    with one_line_error("data.args.steps >= 1"):
        load_split("nmnist", tmp_path, True, steps=0)
    with one_line_error("does not take frames"):
        load_split("nmnist", tmp_path, True, frames=3)


def test_fetch_nmnist_downloads_each_missing_split_or_says_how(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(url, download_root, extract_root=None, filename=None, md5=None, remove_finished=False):
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision does before downloading
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    folder = tmp_path / "NMNIST"
    with one_line_error(f"downloading N-MNIST Train.zip into {folder} failed .*network is unreachable.*"
                        f"unzip them into {folder}") as error:
        fetch("nmnist", tmp_path)
    assert "\n" not in str(error.value) and "Train.zip and Test.zip from https://" in str(error.value)
    assert not folder.exists()  # nothing fetched, nothing left behind

    fetched = []

    def unzip(url, download_root, extract_root=None, filename=None, md5=None, remove_finished=False):
        split = filename.removesuffix(".zip")
        fetched.append((split, md5))
        write_nmnist(tmp_path / "zip", {split: [6]})
        Path(extract_root).mkdir(parents=True)
        (tmp_path / "zip" / "NMNIST" / split).rename(Path(extract_root) / split)

    write_nmnist(tmp_path, {"Train": [1]})  # present: not downloaded again
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", unzip)
    assert fetch("nmnist", tmp_path) == folder
    assert [split for split, _ in fetched] == ["Test"] and len(fetched[0][1]) == 32
    assert load_split("nmnist", tmp_path, False).labels.tolist() == [6]
    assert sorted(p.name for p in folder.iterdir()) == ["Test", "Train"]


def test_nmnist_recipe_trains_end_to_end(tmp_path):
    write_nmnist(tmp_path / "data", {"Train": [0, 1, 2, 3, 4, 5, 6, 7], "Test": [0, 1, 2, 3]})
    code = main(["train", str(REPO / "recipes" / "spiking" / "nmnist.yaml"), f"data.root={tmp_path / 'data'}",
                 f"out_dir={tmp_path / 'runs'}", "name=nm", "data.args.steps=4", "data.batch_size=4",
                 "data.eval_batch_size=4", "model.name=snn_4C5-P2", "trainer.max_epochs=1", "trainer.threads=1",
                 "trainer.progress=none", "trainer.accelerator=cpu"])
    assert code == 0
    run = tmp_path / "runs" / "nm"
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 1 and 0.0 <= results["test_acc"] <= 1.0
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/firing_rate" in header and "train/loss" in header
    assert main(["eval", str(run), "--data", "nmnist", "--root", str(tmp_path / "data")]) == 0  # no augmentation
