"""Distillation losses as pure functions (Hinton et al. 2015; Yuan et al., Tf-KD, CVPR 2020).

Every KL term is the mathematical, batch-mean KL computed from log-probabilities in float32. The
official Tf-KD code uses `nn.KLDivLoss()` with reduction 'mean', which divides by N·K instead of N;
its published multipliers therefore convert to these losses as m_ours = m_official / K.

Each function returns its term alone; the methods in `leannet.distill.teacher` weight and add it
to the cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leannet.errors import LeannetError


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:
        raise LeannetError(f"{name} must be > 0, got {value}")


def _check_classes(logits: Tensor) -> int:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise LeannetError(f"logits must have shape (batch, classes >= 2), got {tuple(logits.shape)}")
    return logits.shape[1]


def batch_kl(target_log_probs: Tensor, log_probs: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ_k p_k (log p_k − log q_k), summed over classes and averaged over the batch.

    Both arguments are log-probabilities (so a zero-probability target class adds nothing).
    """
    return F.kl_div(log_probs.float(), target_log_probs.float(), reduction="batchmean", log_target=True)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton's KD term T²·KL(softmax(t/T) ‖ softmax(z/T)), batch mean (Hinton et al. 2015;
    the L_KD of the Tf-KD paper, §4, with the T² of its code).

    The T² factor keeps the gradient scale independent of the temperature. The teacher side is
    detached: gradients flow only into `student_logits`.
    """
    _check_temperature("temperature", temperature)
    _check_classes(student_logits)
    if teacher_logits.shape != student_logits.shape:
        raise LeannetError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} "
            "differ in shape; teacher and student must predict the same classes"
        )
    teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature**2 * batch_kl(teacher, student)


def smoothed_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label-smoothing targets q' = (1−ε)·onehot(y) + ε/(K−1) on every other class.

    This is the LSR form used by the Tf-KD paper (§4 and its code: mass ε spread over the K−1 wrong classes),
    not PyTorch's `label_smoothing=`, which spreads ε over all K classes.
    """
    if num_classes < 2:
        raise LeannetError(f"label smoothing needs at least 2 classes, got {num_classes}")
    off = smoothing / (num_classes - 1)
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1.0 - smoothing)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Batch-mean cross-entropy against a target distribution: −Σ_k q_k log softmax(z)_k (float32)."""
    return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def label_smoothing_loss(logits: Tensor, target: Tensor, epsilon: float) -> Tensor:
    """LSR (Szegedy et al. 2016; as in the Tf-KD paper and code): CE against (1−ε) on y and ε/(K−1) elsewhere."""
    if not 0.0 <= epsilon < 1.0:
        raise LeannetError(f"epsilon must be in [0, 1), got {epsilon}")
    return soft_cross_entropy(logits, smoothed_targets(target, _check_classes(logits), epsilon))


def virtual_teacher(target: Tensor, num_classes: int, correct_prob: float) -> Tensor:
    """Tf-KD_reg's hand-made teacher p^d (Tf-KD paper §5): a on the label, (1−a)/(K−1) on the others."""
    if not 0.0 < correct_prob <= 1.0:
        raise LeannetError(f"correct_prob must be in (0, 1], got {correct_prob}")
    return smoothed_targets(target, num_classes, 1.0 - correct_prob)


def tfkd_reg_loss(
    logits: Tensor,
    target: Tensor,
    temperature: float,
    correct_prob: float = 0.99,
    student_temperature: float = 1.0,
) -> Tensor:
    """Tf-KD_reg term KL(softmax(p^d/T) ‖ softmax(z/τ_s)), batch mean (Tf-KD paper §5, L_reg).

    p^d is the virtual teacher of `virtual_teacher`, itself softened by `temperature` (the official
    code feeds the probabilities p^d as logits to a softmax at temperature T). The paper's equation
    puts the temperature on the student too (`student_temperature=T`); the official code, and the
    authors' advice for CIFAR-100, use τ_s = 1 (the default).
    """
    _check_temperature("temperature", temperature)
    _check_temperature("student_temperature", student_temperature)
    teacher = virtual_teacher(target, _check_classes(logits), correct_prob)
    teacher = F.log_softmax(teacher / temperature, dim=1)
    student = F.log_softmax(logits.float() / student_temperature, dim=1)
    return batch_kl(teacher, student)
