"""Datasets held in memory as uint8 tensors."""

from leannet.data import local, sources  # noqa: F401  (registers the datasets)
from leannet.data.base import DATASETS, DatasetInfo, Split
from leannet.data.paths import data_root, fetch

__all__ = ["DATASETS", "DatasetInfo", "Split", "data_root", "fetch"]
