"""Normalization techniques: Representative BatchNorm (Gao et al. 2021) and BatchNorm-only training
(Frankle et al. 2021).

>>> model = convert_norm(build_model("tv:resnet18", 10), "rbn")   # every BatchNorm2d becomes RBN
>>> model = freeze(build_model("resnet56", 10), "bn_only")         # train only BN's γ and β

Importing this package registers the norms ``rbn`` and ``rbn_sync`` (``model.norm: rbn``).
"""

from leannet.norm.bn_only import FREEZE_MODES, apply_freeze_config, freeze, norm_layers, output_layer
from leannet.norm.convert import convert_norm, fold_to_batchnorm
from leannet.norm.rbn import RepresentativeBatchNorm2d, SyncRepresentativeBatchNorm2d, rbn_steps

__all__ = [
    "FREEZE_MODES",
    "RepresentativeBatchNorm2d",
    "SyncRepresentativeBatchNorm2d",
    "apply_freeze_config",
    "convert_norm",
    "fold_to_batchnorm",
    "freeze",
    "norm_layers",
    "output_layer",
    "rbn_steps",
]
