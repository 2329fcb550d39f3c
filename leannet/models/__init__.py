"""Models by name and the norm layers they are built with."""

from leannet.models.norms import NORMS, make_norm, swap_batchnorm

__all__ = ["NORMS", "make_norm", "swap_batchnorm"]
