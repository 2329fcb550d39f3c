"""Distillation: pure loss functions, and methods (registered by `leannet.train`) that use them.

>>> from leannet.distill import kd_loss, label_smoothing_loss, tfkd_reg_loss
>>> loss = (1 - alpha) * F.cross_entropy(z, y) + alpha * kd_loss(z, teacher_logits, temperature=4.0)

Recipe methods: `kd`, `tfkd_self`, `tfkd_reg`, `lsr` (see `leannet.distill.teacher`). Modules that
register methods import `leannet.train.methods`, which imports these losses, so they are imported
by `leannet/train/__init__.py`, not here.
"""

from leannet.distill.losses import (
    batch_kl,
    kd_loss,
    label_smoothing_loss,
    smoothed_targets,
    soft_cross_entropy,
    tfkd_reg_loss,
    virtual_teacher,
)

__all__ = [
    "batch_kl",
    "kd_loss",
    "label_smoothing_loss",
    "smoothed_targets",
    "soft_cross_entropy",
    "tfkd_reg_loss",
    "virtual_teacher",
]
