"""Dense-task metrics (as in AdaShare's NYU-v2 tables) and the multi-task summary Δm.

Each task has a torchmetrics ``Metric`` (``update`` per batch, ``compute`` → a dict of scores at the
end; its sums are reduced across processes under DDP); ``HIGHER_IS_BETTER`` gives every metric's
direction, used by ``delta_m``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

HIGHER_IS_BETTER: dict[str, bool] = {
    "miou": True, "pixel_acc": True,
    "abs_err": False, "rel_err": False, "delta1": True,
    "mean_angle": False, "median_angle": False, "within_11.25": True, "within_22.5": True, "within_30": True,
    "edge_err": False, "recon_err": False,
}


class SegmentationMetric(Metric):
    """Mean IoU (over classes present in prediction or target) and pixel accuracy; target -1 ignored."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels = pred.argmax(1)
        valid = target >= 0
        idx = target[valid] * self.num_classes + labels[valid]
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict[str, float]:
        return segmentation_scores(self.confusion)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU and pixel accuracy from a confusion matrix (rows = target, columns = prediction)."""
    tp = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - tp
    present = union > 0
    miou = (tp[present] / union[present]).mean().item() if present.any() else math.nan
    return {"miou": miou, "pixel_acc": (tp.sum() / confusion.sum().clamp_min(1)).item()}


class DepthMetric(Metric):
    """Absolute error, relative error and δ < 1.25 over valid pixels (target > 0)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("abs", "rel", "delta", "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target > 0
        p, g = pred[:, 0][valid].double(), target[valid].double()
        err = (p - g).abs()
        ratio = torch.maximum(p.clamp_min(1e-6) / g, g / p.clamp_min(1e-6))
        self.abs += err.sum()
        self.rel += (err / g).sum()
        self.delta += (ratio < 1.25).sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, float]:
        n = max(float(self.count), 1.0)
        return {"abs_err": float(self.abs) / n, "rel_err": float(self.rel) / n, "delta1": float(self.delta) / n}


def normal_angles(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angles in degrees between normalised predicted and target normals at valid (non-zero) pixels."""
    valid = target.abs().sum(1) > 0
    cos = (F.normalize(pred.double(), dim=1) * F.normalize(target.double(), dim=1)).sum(1)
    return torch.rad2deg(torch.acos(cos[valid].clamp(-1, 1)))


class NormalsMetric(Metric):
    """Mean and median angular error, and % of pixels within 11.25°, 22.5°, 30° (all angles are kept
    for the median)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("angles", [], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.angles.append(normal_angles(pred, target).float())

    def compute(self) -> dict[str, float]:
        a = (torch.cat(self.angles) if isinstance(self.angles, list) else self.angles).double()
        return {"mean_angle": a.mean().item(), "median_angle": a.median().item(),
                **{f"within_{t:g}": (a < t).double().mean().item() for t in (11.25, 22.5, 30)}}


class EdgeMetric(Metric):
    """Edge error: mean absolute difference between the predicted edge probability and the 0/1 target
    (lower is better; Taskonomy-style, as AdaShare's edge tasks)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.total += (torch.sigmoid(pred[:, 0].double()) - target.double()).abs().sum()
        self.count += target.numel()

    def compute(self) -> dict[str, float]:
        return {"edge_err": float(self.total) / max(float(self.count), 1.0)}


class AutoencodingMetric(Metric):
    """Reconstruction error: mean absolute difference between the predicted image and the input image,
    in [0, 1] intensity units (lower is better)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.total += (pred.double() - target.double() / 255).abs().sum()
        self.count += target.numel()

    def compute(self) -> dict[str, float]:
        return {"recon_err": float(self.total) / max(float(self.count), 1.0)}


def task_metric(task: str, channels: int) -> Metric:
    """A fresh metric for ``task``."""
    if task == "segmentation":
        return SegmentationMetric(channels)
    return {"depth": DepthMetric, "normals": NormalsMetric, "edges": EdgeMetric,
            "autoencoding": AutoencodingMetric}[task]()


def delta_m(metrics: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]
            ) -> tuple[float, dict[str, float]]:
    """Δm in % (Maninis et al.; AdaShare): the mean over all metrics j of (−1)^{l_j}·(M_j − B_j)/B_j·100,
    l_j = 1 when lower is better. Also returns Δ_T per task (the mean over that task's metrics)."""
    per_task, every = {}, []
    for task, values in metrics.items():
        changes = []
        for name, value in values.items():
            if name not in HIGHER_IS_BETTER:
                continue
            base = baseline[task][name]
            sign = 1.0 if HIGHER_IS_BETTER[name] else -1.0
            changes.append(sign * (value - base) / base * 100 if base != 0 else math.nan)
        per_task[task] = sum(changes) / len(changes)
        every += changes
    return sum(every) / len(every), per_task
