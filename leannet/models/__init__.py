"""Models by name: CIFAR ResNets and small baselines, built with norm layers chosen by name.

>>> model = build_model("resnet20", num_classes=10, norm="none")
"""

from leannet.models import resnet_cifar, small  # noqa: F401  (registers the models)
from leannet.models.factory import MODELS, build_model, count_parameters, register_model
from leannet.models.norms import NORMS, make_norm, swap_batchnorm

__all__ = [
    "MODELS",
    "NORMS",
    "build_model",
    "count_parameters",
    "make_norm",
    "register_model",
    "swap_batchnorm",
]
