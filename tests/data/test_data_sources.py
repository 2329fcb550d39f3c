import gzip
import pickle
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leannet.data import DatasetInfo, data_root, fetch
from leannet.data import paths as data_paths
from leannet.data.base import channel_stats, load_split
from leannet.errors import LeannetError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@contextmanager
def one_line_error(match: str) -> Iterator[pytest.ExceptionInfo]:
    """pytest.raises for a LeannetError whose message is one line matching ``match``."""
    with pytest.raises(LeannetError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


# ---- files in the real formats, small ----

def write_idx(folder: Path, prefix: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
    return images


def write_mnist(root: Path, dataset: str = "MNIST") -> np.ndarray:
    write_idx(root / dataset / "raw", "t10k", 7, seed=1)
    return write_idx(root / dataset / "raw", "train", 12)


def pickle_to(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj))


def cifar_batch(n: int, key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return {"data": data, key: rng.integers(0, 10, n).tolist(), "batch_label": "fake"}


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        pickle_to(folder / f"data_batch_{i}", cifar_batch(3, "labels", i))
    pickle_to(folder / "test_batch", cifar_batch(4, "labels", 0))
    pickle_to(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    pickle_to(folder / "train", cifar_batch(6, "fine_labels", 1) | {"coarse_labels": [0] * 6})
    pickle_to(folder / "test", cifar_batch(2, "fine_labels", 2) | {"coarse_labels": [0] * 2})
    pickle_to(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []})
    return folder


# ---- data directory and Fashion-MNIST ----

def test_data_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("LEANNET_DATA")
    assert data_root() == Path.home() / ".cache" / "leannet" / "data"


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} missing (apt-get install "
                    "dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path))
    train = load_split("fashion_mnist", data_root(), True)
    test = load_split("fashion_mnist", data_root(), False)
    assert (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert len(test) == 10000 and set(test.labels.tolist()) == set(range(10))
    info = DatasetInfo.from_split(train)
    assert info.num_classes == 10 and info.class_names[0] == "T-shirt/top"
    mean, std = channel_stats(train.images)
    assert mean[0] == pytest.approx(info.mean[0], abs=1e-3) and std[0] == pytest.approx(info.std[0], abs=1e-3)


def test_fashion_mnist_from_a_system_copy_via_fetch(monkeypatch, tmp_path):
    system = tmp_path / "system"
    images = write_mnist(tmp_path / "made", "FashionMNIST")
    system.mkdir()
    for f in (tmp_path / "made" / "FashionMNIST" / "raw").iterdir():
        (system / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    monkeypatch.setattr(data_paths, "SYSTEM_FASHION_MNIST", system)
    raw = fetch("fashion_mnist", tmp_path / "data")
    assert sorted(p.name for p in raw.iterdir()) == sorted(data_paths.IDX_FILES)
    split = load_split("fashion_mnist", tmp_path / "data", True)
    assert torch.equal(split.images[:, 0], torch.from_numpy(images))


def test_missing_fashion_mnist_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(data_paths, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    with one_line_error("apt-get install dataset-fashion-mnist") as info:
        load_split("fashion_mnist", tmp_path, True)
    assert "leannet data fetch fashion_mnist" in str(info.value)


def test_corrupt_system_gzip_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(data_paths, "SYSTEM_FASHION_MNIST", tmp_path)
    for name in data_paths.IDX_FILES:
        (tmp_path / f"{name}.gz").write_bytes(b"not gzip")
    with one_line_error("cannot decompress"):
        load_split("fashion_mnist", tmp_path / "data", True)
    assert not list((tmp_path / "data").rglob("*ubyte*"))


# ---- MNIST ----

def test_mnist_from_idx_files(tmp_path):
    images = write_mnist(tmp_path)
    train, test = load_split("mnist", tmp_path, True), load_split("mnist", tmp_path, False)
    assert train.images.shape == (12, 1, 28, 28) and len(test) == 7
    assert torch.equal(train.images[:, 0], torch.from_numpy(images)) and train.labels.dtype == torch.int64
    assert train.mean == (0.1307,) and train.class_names[0] == "0 - zero"


def test_missing_mnist_names_the_folder(tmp_path):
    with one_line_error("leannet data fetch mnist") as info:
        load_split("mnist", tmp_path, True)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)


def test_truncated_idx_file_is_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with one_line_error("train-images-idx3-ubyte is corrupt or truncated.*delete it"):
        load_split("mnist", tmp_path, True)
    assert len(load_split("mnist", tmp_path, False)) == 7


# ---- CIFAR ----

def test_cifar10_from_python_batches(tmp_path):
    folder = write_cifar10(tmp_path)
    train, test = load_split("cifar10", tmp_path, True), load_split("cifar10", tmp_path, False)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8 and len(test) == 4
    batch = pickle.loads((folder / "data_batch_1").read_bytes())
    assert torch.equal(train.images[0].flatten(), torch.from_numpy(batch["data"][0]))
    assert train.labels[:3].tolist() == batch["labels"] and train.class_names[9] == "class9"


def test_cifar100_from_python_batches(tmp_path):
    write_cifar100(tmp_path)
    train, test = load_split("cifar100", tmp_path, True), load_split("cifar100", tmp_path, False)
    assert train.images.shape == (6, 3, 32, 32) and len(test) == 2
    assert len(train.class_names) == 100 and train.std == (0.2673, 0.2564, 0.2762)


def test_missing_cifar_says_where_and_how(tmp_path):
    with one_line_error("leannet data fetch cifar10") as info:
        load_split("cifar10", tmp_path, True)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


def test_garbage_cifar_pickle_is_named(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x00garbage" * 50)
    with one_line_error("data_batch_3 is corrupt or truncated.*delete it"):
        load_split("cifar10", tmp_path, True)


class PlantedPayload:
    """Unpickling this calls os.system (touching ``marker``): what a hostile file in a data folder would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class HiddenPayload(PlantedPayload):
    """The same, through a standard-library global (builtins.exec) nested inside a real-looking batch."""

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("payload", [PlantedPayload, HiddenPayload])
@pytest.mark.parametrize("where", ["batch", "inside", "meta"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, dataset, payload, where):
    folder = (write_cifar10 if dataset == "cifar10" else write_cifar100)(tmp_path / "data")
    marker = tmp_path / "marker"
    name = {"batch": "data_batch_1" if dataset == "cifar10" else "train",
            "inside": "data_batch_1" if dataset == "cifar10" else "train",
            "meta": "batches.meta" if dataset == "cifar10" else "meta"}[where]
    key = "labels" if dataset == "cifar10" else "fine_labels"
    planted = {"batch": payload(marker), "inside": cifar_batch(3, key, 1) | {"batch_label": payload(marker)},
               "meta": {"label_names": payload(marker), "fine_label_names": payload(marker)}}[where]
    pickle_to(folder / name, planted)
    for train in (True, False) if where == "meta" else (True,):  # the planted batch is a training one
        with one_line_error(f"{folder / name} .*could run code.*delete it") as info:
            load_split(dataset, tmp_path / "data", train)
        assert not marker.exists(), "the payload ran"
        assert "system" in str(info.value) or "exec" in str(info.value)


def test_python2_cifar_batches_with_numpy_1_globals_load(tmp_path):
    """The real batches are Python 2 protocol-2 pickles naming numpy.core.multiarray._reconstruct,
    numpy.ndarray and numpy.dtype, with byte strings (str in Python 2): the same opcodes, written here."""
    folder = write_cifar10(tmp_path)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = pickle.loads((folder / name).read_bytes())
        raw = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)
    train = load_split("cifar10", tmp_path, True)
    assert torch.equal(train.images[0].flatten(), torch.from_numpy(cifar_batch(3, "labels", 1)["data"][0]))


# ---- digits and image folders ----

def test_digits_split_is_fixed_and_scaled():
    train, test = load_split("digits", Path("."), True), load_split("digits", Path("."), False)
    assert train.images.shape == (1437, 1, 8, 8) and len(test) == 360
    assert train.images.max() == 255 and train.mean is None
    assert torch.equal(load_split("digits", Path("."), False).images, test.images)
    info = DatasetInfo.from_split(train)
    assert info.image_size == (8, 8) and 0.2 < info.mean[0] < 0.4


def write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (10, 7), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


def test_imagefolder_decodes_resizes_and_labels(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", (200, 10, 10))
    write_png(tmp_path / "train" / "cat" / "b.png", (100, 10, 10), size=(40, 40))
    write_png(tmp_path / "train" / "dog" / "a.png", (128, 128, 128), mode="L")
    write_png(tmp_path / "val" / "dog" / "a.png", (0, 0, 250))
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored")
    train = load_split("imagefolder", tmp_path, True, image_size=8)
    test = load_split("imagefolder", tmp_path, False, image_size=(6, 5))
    assert train.images.shape == (3, 3, 8, 8) and train.class_names == ["cat", "dog"]
    assert train.labels.tolist() == [0, 0, 1]
    assert train.images[0, :, 3, 3].tolist() == [200, 10, 10] and train.images[2, :, 0, 0].tolist() == [128] * 3
    assert test.images.shape == (1, 3, 6, 5) and test.labels.tolist() == [1]
    assert DatasetInfo.from_split(train).in_channels == 3


def test_imagefolder_errors_are_one_line(tmp_path):
    with one_line_error("imagefolder expects"):
        load_split("imagefolder", tmp_path, True)
    write_png(tmp_path / "train" / "cat" / "a.png", (1, 2, 3))
    write_png(tmp_path / "test" / "bird" / "a.png", (1, 2, 3))
    with one_line_error("bird"):
        load_split("imagefolder", tmp_path, False)
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with one_line_error("broken.png"):
        load_split("imagefolder", tmp_path, True)


def test_unknown_dataset_option_is_one_line(tmp_path):
    with one_line_error("does not take colour"):
        load_split("digits", tmp_path, True, colour=True)


def test_fetch_unknown_dataset(tmp_path):
    with one_line_error("cannot fetch 'imagefolder'"):
        fetch("imagefolder", tmp_path)


def test_parallel_runs_unpack_the_same_file_without_colliding(tmp_path):
    """Two processes decompressing one idx file at once (two runs started together) both succeed."""
    import gzip
    import subprocess
    import sys

    source = tmp_path / "train-images-idx3-ubyte.gz"
    payload = bytes(range(256)) * 40_000
    source.write_bytes(gzip.compress(payload, compresslevel=1))
    target = tmp_path / "raw" / "train-images-idx3-ubyte"
    code = ("import sys; from pathlib import Path; from leannet.data.paths import _gunzip; "
            "_gunzip(Path(sys.argv[1]), Path(sys.argv[2]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(source), str(target)], stderr=subprocess.PIPE)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert target.read_bytes() == payload and not list(target.parent.glob("*.partial"))
