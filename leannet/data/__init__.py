"""Datasets held in memory as uint8 tensors, and fast loaders over them.

>>> loaders = build_loaders("fashion_mnist", batch_size=128)
>>> for x, y in loaders.train: ...
"""

from leannet.data import local, scenes, sources  # noqa: F401  (registers the datasets)
from leannet.data.base import DATASETS, DatasetInfo, Split
from leannet.data.loaders import Loaders, build_loaders
from leannet.data.paths import data_root, fetch
from leannet.data.tensor_loader import TensorLoader

__all__ = [
    "DATASETS", "DatasetInfo", "Loaders", "Split", "TensorLoader", "build_loaders", "data_root", "fetch",
]
