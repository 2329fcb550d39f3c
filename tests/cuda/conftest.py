"""Fixtures of the CUDA tests: the device they run on and float32 on the CPU for the references.

TF32 is switched off in these tests so that CUDA float32 is compared with CPU float32 at float32's
precision (PyTorch leaves it on for cuDNN convolutions by default).
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import cuda_test_device


@pytest.fixture
def device() -> str:
    return cuda_test_device() or "cuda"


@pytest.fixture(autouse=True)
def exact_float32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
