"""Models by name: CIFAR ResNets, small baselines, and torchvision / timm models (``tv:``, ``timm:``).

>>> model = build_model("resnet20", num_classes=10)
>>> model = build_model("tv:resnet18", num_classes=10, in_channels=1, norm="none")
"""

from leannet.models import external, resnet_cifar, small  # noqa: F401  (registers the models)
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
