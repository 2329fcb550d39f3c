"""Shared fixtures: a tiny, fast recipe on real Fashion-MNIST (skipped with a reason if it is absent).

Tests marked `cuda` (tests/cuda/) skip with "no CUDA device" unless PyTorch sees a GPU; a rehearsal of
them on the CPU runs with LEANNET_TEST_DEVICE=cpu (the float16 cases then check the refusal instead).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leannet.config import load_recipe

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_available() -> bool:
    from leannet.data import data_root

    root = Path(os.environ.get("LEANNET_DATA", data_root()))
    return DEBIAN_FASHION.is_dir() or (root / "FashionMNIST" / "raw").is_dir()


def pytest_configure(config):
    config.addinivalue_line("markers", "fashion: needs Fashion-MNIST (skipped with a reason when absent)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped with 'no CUDA device' without one)")


def cuda_test_device() -> str | None:
    """Where the `cuda` tests run: `cuda`, the LEANNET_TEST_DEVICE rehearsal device (e.g. `cpu`), or None."""
    import torch

    return os.environ.get("LEANNET_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") and cuda_test_device() is None:
        pytest.skip("no CUDA device")
    if item.get_closest_marker("fashion") and not fashion_mnist_available():
        pytest.skip(
            "Fashion-MNIST missing: `leannet data fetch fashion_mnist` or apt-get install dataset-fashion-mnist"
        )


@pytest.fixture
def tiny_recipe(tmp_path):
    """A recipe that trains in a few seconds: 100 images per class, a narrow ResNet-8, 2 epochs."""

    def make(*overrides: str):
        base = [
            f"out_dir={tmp_path / 'runs'}",
            "name=tiny",
            "data.few_shot=100",
            "data.val_size=200",
            "data.batch_size=50",
            "data.eval_batch_size=1000",
            "model.name=resnet8",
            "model.width=0.5",
            "trainer.max_epochs=2",
            "trainer.progress=none",
            "schedule.name=constant",
            "optim.lr=0.05",
        ]
        return load_recipe(REPO / "recipes" / "baseline" / "fashion_mnist.yaml", [*base, *overrides])

    return make
