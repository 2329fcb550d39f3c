"""Shared fixtures: one intra-op thread, and a test norm registered in NORMS for one test."""

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from leannet.models import NORMS


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny batches run fastest on one thread; with several, a busy 2-core machine is 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TaggedNorm(nn.BatchNorm2d):
    """A BatchNorm2d of its own type, to tell which layers came from the registered factory."""


@pytest.fixture
def tagged_norm() -> Iterator[tuple[str, type[nn.Module]]]:
    """Registers TaggedNorm as the norm "test_tagged"; yields (name, class)."""
    name = "test_tagged"

    @NORMS.register(name)
    def factory(num_features, *, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        return TaggedNorm(
            num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
        )

    yield name, TaggedNorm
    NORMS._items.pop(name)
