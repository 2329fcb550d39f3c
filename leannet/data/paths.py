"""Where datasets live on disk, and how they get there."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from leannet.data.base import one_line
from leannet.errors import LeannetError

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the gzip files."""

NMNIST_PAGE = "https://www.garrickorchard.com/datasets/n-mnist"
NMNIST_FILES = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"  # doi:10.17632/468j46mzdv.1
NMNIST_ARCHIVES = {  # split folder → (file id at NMNIST_FILES, md5 of <split>.zip)
    "Train": ("39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded", "20959b8e626244a1b502305a9e6e2031"),
    "Test": ("05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded", "69ca8762b2fe404d9b9bad1103e97832"),
}

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def data_root() -> Path:
    """The data directory: ``$LEANNET_DATA`` if set, else ``~/.cache/leannet/data``."""
    env = os.environ.get("LEANNET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "leannet" / "data"


def idx_folder(root: Path, dataset: str) -> Path:
    """The raw folder torchvision reads ``MNIST``/``FashionMNIST`` idx files from."""
    return Path(root) / dataset / "raw"


def has_idx_files(folder: Path) -> bool:
    """True when all four uncompressed idx files are in ``folder``."""
    return all((folder / name).is_file() for name in IDX_FILES)


def ensure_fashion_mnist(root: Path, download: bool = False) -> Path:
    """Make Fashion-MNIST's idx files available under ``root`` and return their folder.

    Lookup order: already under ``root``; the Debian copy in ``SYSTEM_FASHION_MNIST`` (decompressed
    into ``root``); a torchvision download when ``download`` is true.
    """
    raw = idx_folder(root, "FashionMNIST")
    if has_idx_files(raw):
        return raw
    if all((SYSTEM_FASHION_MNIST / f"{name}.gz").is_file() for name in IDX_FILES):
        for name in IDX_FILES:
            if not (raw / name).is_file():
                _gunzip(SYSTEM_FASHION_MNIST / f"{name}.gz", raw / name)
        return raw
    if download:
        _torchvision_download("fashion_mnist", root)
        return raw
    raise LeannetError(
        f"Fashion-MNIST not found in {raw} or {SYSTEM_FASHION_MNIST}; get it with "
        "`apt-get install dataset-fashion-mnist` (as root) "
        "or `leannet data fetch fashion_mnist` (needs internet)"
    )


def _gunzip(source: Path, target: Path) -> None:
    # Decompress next to the target and rename, so an interrupted run never leaves a truncated file.
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # one per process: parallel runs unpack at once
    try:
        with gzip.open(source, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as error:
        partial.unlink(missing_ok=True)
        raise LeannetError(
            f"cannot decompress {source} ({one_line(error)}); reinstall dataset-fashion-mnist "
            "or run `leannet data fetch fashion_mnist`"
        ) from error
    partial.replace(target)


def nmnist_folder(root: Path) -> Path:
    """The folder holding N-MNIST's unzipped ``Train/`` and ``Test/`` (``<digit>/<id>.bin`` inside)."""
    return Path(root) / "NMNIST"


def nmnist_how_to(folder: Path) -> str:
    """How to get N-MNIST into ``folder`` by hand (the end of every missing-data message)."""
    return (f"download Train.zip and Test.zip from {NMNIST_PAGE} (Mendeley Data doi:10.17632/468j46mzdv.1) "
            f"and unzip them into {folder}")


def has_nmnist_split(folder: Path, split: str) -> bool:
    """True when ``folder/split`` holds at least one ``<digit>/*.bin`` event file."""
    return next((folder / split).glob("[0-9]/*.bin"), None) is not None


def ensure_nmnist(root: Path) -> Path:
    """Download and unzip whichever of N-MNIST's Train/Test folders is missing; return their folder.

    Each archive is checked against its md5 and unzipped into a ``<split>.partial`` folder that is
    renamed when complete, so an interrupted fetch never leaves a half-filled ``Train/``.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    folder = nmnist_folder(root)
    for split, (file_id, md5) in NMNIST_ARCHIVES.items():
        if has_nmnist_split(folder, split):
            continue
        partial = folder / f"{split}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            download_and_extract_archive(NMNIST_FILES + file_id, folder, extract_root=partial,
                                         filename=f"{split}.zip", md5=md5, remove_finished=True)
            (partial / split).replace(folder / split)
        except Exception as error:  # network, checksum, extraction and layout errors all end up here
            shutil.rmtree(partial, ignore_errors=True)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # a fetch that got nothing leaves nothing
            raise LeannetError(f"downloading N-MNIST {split}.zip into {folder} failed ({one_line(error)}); "
                               f"{nmnist_how_to(folder)}") from error
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _torchvision_download(name: str, root: Path) -> None:
    from torchvision import datasets

    cls = {
        "fashion_mnist": datasets.FashionMNIST,
        "mnist": datasets.MNIST,
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
    }[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as error:  # network, checksum and extraction errors all end up here
        raise LeannetError(f"downloading {name} into {root} failed: {one_line(error)}") from error


def fetch(name: str, root: Path | str | None = None) -> Path:
    """Put dataset ``name`` into the data directory (downloading if needed) and return its folder.

    ``fashion_mnist`` prefers the local Debian copy; ``mnist``, ``cifar10`` and ``cifar100`` are
    downloaded by torchvision, ``nmnist`` from Mendeley Data; ``digits`` ships with scikit-learn.
    """
    root = Path(root) if root is not None else data_root()
    if name == "fashion_mnist":
        return ensure_fashion_mnist(root, download=True)
    if name == "mnist":
        _torchvision_download(name, root)
        return idx_folder(root, "MNIST")
    if name in ("cifar10", "cifar100"):
        _torchvision_download(name, root)
        return root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    if name == "nmnist":
        return ensure_nmnist(root)
    if name == "digits":
        return root
    raise LeannetError(
        f"cannot fetch '{name}'; fetchable datasets: cifar10, cifar100, digits, fashion_mnist, mnist, nmnist "
        "(imagefolder reads a folder you provide)"
    )
