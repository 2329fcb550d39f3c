"""Distillation: pure loss functions, and the recipe methods built on them.

>>> from leannet.distill import kd_loss, label_smoothing_loss, tfkd_reg_loss
>>> loss = (1 - alpha) * F.cross_entropy(z, y) + alpha * kd_loss(z, teacher_logits, temperature=4.0)

Recipe methods: `kd`, `tfkd_self`, `tfkd_reg` (`leannet.distill.teacher`), `lsr` / `label_smoothing`
(`leannet.distill.lsr`), and `byot` (`leannet.distill.byot`, Be Your Own Teacher:
`SelfDistillation(model, exits=[...])`). Importing this package registers them (`leannet.plugins`).
"""

from leannet.distill.byot import (
    BYOT,
    SelfDistillation,
    SelfDistillationOutput,
    byot_loss,
    count_macs,
    dynamic_exit,
    dynamic_exit_curve,
    hint_loss,
)
from leannet.distill.losses import (
    batch_kl,
    kd_loss,
    label_smoothing_loss,
    smoothed_targets,
    soft_cross_entropy,
    tfkd_reg_loss,
    virtual_teacher,
)
from leannet.distill.lsr import LabelSmoothing
from leannet.distill.teacher import FrozenTeacher, KnowledgeDistillation, TfKDReg, TfKDSelf, resolve_teacher

__all__ = [
    "BYOT",
    "SelfDistillation",
    "SelfDistillationOutput",
    "byot_loss",
    "count_macs",
    "dynamic_exit",
    "dynamic_exit_curve",
    "hint_loss",
    "FrozenTeacher",
    "KnowledgeDistillation",
    "LabelSmoothing",
    "TfKDReg",
    "TfKDSelf",
    "batch_kl",
    "kd_loss",
    "label_smoothing_loss",
    "resolve_teacher",
    "smoothed_targets",
    "soft_cross_entropy",
    "tfkd_reg_loss",
    "virtual_teacher",
]
