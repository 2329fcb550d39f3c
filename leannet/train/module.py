"""The one LightningModule: wraps a method, knows no technique."""

from __future__ import annotations

import copy
import random
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from leannet.errors import LeannetError
from leannet.method import Method
from leannet.train.optim import build_optimizer, build_schedule


class NonFiniteLossError(LeannetError):
    """Raised when a training loss is NaN or infinite; the last good checkpoint is kept."""


class LeanModule(L.LightningModule):
    """Calls `method(batch)`, backpropagates its `loss`, logs every other scalar it returns.

    Evaluation uses `method.eval_logits(x)`: top-1 (and top-5 when there are more than 10 classes) of
    `predict(x)` as `acc`, and of every other named output as `acc_<name>` (`top5_<name>`).
    """

    def __init__(
        self,
        method: Method,
        optim: DictConfig,
        schedule: DictConfig,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.method = method
        self.optim_cfg = optim
        self.schedule_cfg = schedule
        self.channels_last = channels_last
        classes = method.num_classes
        self.eval_acc = torch.nn.ModuleDict()
        for stage in ("val", "test"):
            self.eval_acc[f"{stage}_acc"] = MulticlassAccuracy(classes, average="micro")
            if classes > 10:
                self.eval_acc[f"{stage}_top5"] = MulticlassAccuracy(classes, top_k=5, average="micro")

    def _prepare(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = self._prepare(batch)
        out = self.method((x, y))
        loss = out["loss"]
        if not torch.isfinite(loss):
            kept = (f"last.ckpt (end of epoch {self.current_epoch}) is kept" if self.current_epoch > 0
                    else "no checkpoint was written (it fails in the first epoch)")
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) in epoch {self.current_epoch + 1}, "
                f"step {self.global_step + 1}; training stopped and {kept}; lower optim.lr or check the data"
            )
        n = y.shape[0]
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        acc = (out["logits"].detach().argmax(dim=1) == y).float().mean()
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=n)
        for key, value in out.items():
            if key not in ("loss", "logits") and isinstance(value, Tensor) and value.numel() == 1:
                self.log(f"train/{key}", value.detach(), on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _metric(self, stage: str, kind: str, name: str, device: torch.device) -> MulticlassAccuracy | None:
        """The accuracy metric of one named output (created on first use for outputs other than "")."""
        key = f"{stage}_{kind}" + (f"_{name}" if name else "")
        if key not in self.eval_acc:
            if f"{stage}_{kind}" not in self.eval_acc:
                return None
            self.eval_acc[key] = copy.deepcopy(self.eval_acc[f"{stage}_{kind}"]).to(device)
            self.eval_acc[key].reset()
        return self.eval_acc[key]

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = self._prepare(batch)
        outputs = self.method.eval_logits(x)
        if "" not in outputs:
            raise LeannetError(f"{type(self.method).__name__}.eval_logits must return the predict() logits under ''")
        self.log(f"{stage}/loss", F.cross_entropy(outputs[""].float(), y), on_epoch=True, batch_size=y.shape[0])
        for name, logits in outputs.items():
            suffix = f"_{name}" if name else ""
            for kind in ("acc", "top5"):
                metric = self._metric(stage, kind, name, logits.device)
                if metric is not None:
                    metric.update(logits, y)
                    key = f"{stage}_{kind}{suffix}"  # named: metrics added after Lightning cached its metric names
                    self.log(f"{stage}/{kind}{suffix}", metric, on_epoch=True, metric_attribute=f"eval_acc.{key}")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_train_start(self) -> None:
        """The method's `fit_start` hook, given epoch 0's training batches (the loader's epoch is restored)."""
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        epoch = getattr(sampler, "epoch", None)

        def batches():  # lazy: a method that ignores the hook costs no pass over the data
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(0)
            for x, y in loader:
                yield self._prepare((x.to(self.device), y.to(self.device)))

        try:
            self.method.fit_start(batches())
        finally:
            if epoch is not None:
                sampler.epoch = epoch

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's optimizer step, then the method's `after_step` hook."""
        super().optimizer_step(*args, **kwargs)
        self.method.after_step()

    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.method, self.optim_cfg)
        epochs = self.trainer.max_epochs
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        sched = build_schedule(opt, self.schedule_cfg, steps_per_epoch, epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
