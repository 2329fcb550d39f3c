"""Multi-task learning: AdaShare (select-or-skip residual blocks per task), dense heads and metrics."""

from leannet.multitask import methods  # noqa: F401  (registers adashare_resnet and the multi-task methods)
from leannet.multitask.adashare import (
    AdaShareNet,
    GatedBasicBlock,
    apply_curriculum,
    execute_probability,
    gumbel_policy,
    learnable_blocks,
    policy_tensor,
    random_policy,
    sample_discrete,
    sharing_loss,
    sparsity_loss,
)
from leannet.multitask.heads import TASKS, DenseHead, TaskSpec
from leannet.multitask.metrics import delta_m

__all__ = [
    "TASKS", "AdaShareNet", "DenseHead", "GatedBasicBlock", "TaskSpec", "apply_curriculum", "delta_m",
    "execute_probability", "gumbel_policy", "learnable_blocks", "policy_tensor", "random_policy",
    "sample_discrete", "sharing_loss", "sparsity_loss",
]
