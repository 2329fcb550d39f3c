"""The one LightningModule: wraps a method, knows no technique."""

from __future__ import annotations

import copy
import random
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
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
    `predict(x)` as `acc`, and of every other named output as `acc_<name>` (`top5_<name>`); a method
    with its own `eval_metrics` (e.g. dense multi-task scores) is evaluated by its `evaluate` instead.
    A non-finite loss stops training (`NonFiniteLossError`); on an accelerator the check of a step's loss is
    read at the next step (`defer_finite_check`), so no step waits for its own loss to reach the host.
    A method with `extra_optimizers` is trained with manual optimization: each batch steps the optimizer
    its output names. Before every epoch the method's `start_epoch` may pick the training samples.
    """

    defer_finite_check: bool | None = None  # None: defer on an accelerator, check at once on the CPU

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
        self._pending_loss: tuple[Tensor, int, int] | None = None  # (loss, epoch, step) not yet checked
        classes = method.num_classes
        self.eval_acc = torch.nn.ModuleDict()
        self.extra_names = list(method.extra_optimizers())
        self.automatic_optimization = not self.extra_names
        own = method.eval_metrics()
        self.own_metrics = None
        if own is not None:
            fresh = {stage: {k: copy.deepcopy(m) for k, m in own.items()} for stage in ("val", "test")}
            self.own_metrics = torch.nn.ModuleDict({stage: torch.nn.ModuleDict(m) for stage, m in fresh.items()})
            return
        for stage in ("val", "test"):
            self.eval_acc[f"{stage}_acc"] = MulticlassAccuracy(classes, average="micro")
            if classes > 10:
                self.eval_acc[f"{stage}_top5"] = MulticlassAccuracy(classes, top_k=5, average="micro")

    def _prepare(self, batch: tuple[Tensor, Any]) -> tuple[Tensor, Any]:
        x, y = batch
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self._raise_if_nonfinite()  # the previous step's loss, when its check was deferred
        x, y = self._prepare(batch)
        out = self.method((x, y))
        loss = out["loss"]
        self._pending_loss = (loss.detach(), self.current_epoch, self.global_step)
        if not self._defer(loss):
            self._raise_if_nonfinite()
        if not self.automatic_optimization:
            self._manual_step(loss, out.get("optimizer", ""))
        n = x.shape[0]
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        if "logits" in out and isinstance(y, Tensor):
            acc = (out["logits"].detach().argmax(dim=1) == y).float().mean()
            self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=n)
        for key, value in out.items():
            if key not in ("loss", "logits") and isinstance(value, Tensor) and value.numel() == 1:
                self.log(f"train/{key}", value.detach(), on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _defer(self, loss: Tensor) -> bool:
        """Whether the finiteness of this step's loss is read at the next step (or before any validation or
        checkpoint) rather than now: on an accelerator, reading it at once would wait for the step every step."""
        return self.defer_finite_check if self.defer_finite_check is not None else loss.device.type != "cpu"

    def _raise_if_nonfinite(self) -> None:
        """Raise `NonFiniteLossError` if the loss not checked yet is NaN or infinite."""
        pending, self._pending_loss = self._pending_loss, None
        if pending is None or bool(torch.isfinite(pending[0])):
            return
        loss, epoch, step = pending
        kept = (f"last.ckpt (end of epoch {epoch}) is kept" if epoch > 0
                else "no checkpoint was written (it fails in the first epoch)")
        raise NonFiniteLossError(
            f"non-finite training loss ({loss.item()}) in epoch {epoch + 1}, step {step + 1}; "
            f"training stopped and {kept}; lower optim.lr or check the data"
        )

    def on_validation_start(self) -> None:
        self._raise_if_nonfinite()  # before a checkpoint can keep weights a non-finite step produced

    def on_train_epoch_end(self) -> None:
        self._raise_if_nonfinite()

    def on_train_end(self) -> None:
        self._raise_if_nonfinite()

    def _manual_step(self, loss: Tensor, name: str) -> None:
        """Backpropagate and step the optimizer named `name` ("": the recipe's, which alone is scheduled)."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        names = ["", *self.extra_names]
        if name not in names:
            raise LeannetError(f"{type(self.method).__name__} asked for optimizer '{name}'; it has: "
                               f"{', '.join(repr(n) for n in names)}")
        optimizer = optimizers[names.index(name)]
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        if name == "":
            self.lr_schedulers().step()
        self.method.after_step()

    def _metric(self, stage: str, kind: str, name: str, device: torch.device) -> MulticlassAccuracy | None:
        """The accuracy metric of one named output (created on first use for outputs other than "")."""
        key = f"{stage}_{kind}" + (f"_{name}" if name else "")
        if key not in self.eval_acc:
            if f"{stage}_{kind}" not in self.eval_acc:
                return None
            self.eval_acc[key] = copy.deepcopy(self.eval_acc[f"{stage}_{kind}"]).to(device)
            self.eval_acc[key].reset()
        return self.eval_acc[key]

    def _eval_step(self, stage: str, batch: tuple[Tensor, Any]) -> None:
        x, y = self._prepare(batch)
        if self.own_metrics is not None:
            for key, value in self.method.evaluate((x, y), self.own_metrics[stage]).items():
                self.log(f"{stage}/{key}", value, on_epoch=True, batch_size=x.shape[0])
            return
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

    def validation_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _log_own_metrics(self, stage: str) -> None:
        """A method's own metrics: every score of `compute()` as `<stage>/<metric>/<score>`, then reset."""
        if self.own_metrics is None:
            return
        for name, metric in self.own_metrics[stage].items():
            for key, value in metric.compute().items():
                self.log(f"{stage}/{name}/{key}", float(value), batch_size=1)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_own_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_own_metrics("test")

    def on_train_epoch_start(self) -> None:
        """The method's `start_epoch` hook (its `train_subset` reaches the loader through `plan`, set by the run)."""
        self.method.start_epoch(self.current_epoch)

    def on_train_start(self) -> None:
        """The method's `fit_start` hook, given epoch 0's training batches (the loader's epoch is restored)."""
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        epoch = getattr(sampler, "epoch", None)

        def batches():  # lazy: a method that ignores the hook costs no pass over the data
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(0)
            for batch in loader:
                yield self._prepare(move_data_to_device(batch, self.device))

        try:
            self.method.fit_start(batches())
        finally:
            if epoch is not None:
                sampler.epoch = epoch

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:  # automatic optimization only
        """Lightning's optimizer step, then the method's `after_step` hook."""
        super().optimizer_step(*args, **kwargs)
        self.method.after_step()

    def configure_optimizers(self) -> dict[str, Any]:
        extra = self.method.extra_optimizers()
        own = [p for optimizer in extra.values() for group in optimizer.param_groups for p in group["params"]]
        opt = build_optimizer(self.method, self.optim_cfg, exclude=own)
        epochs = self.trainer.max_epochs
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        sched = build_schedule(opt, self.schedule_cfg, steps_per_epoch, epochs)
        if extra:
            return [opt, *extra.values()], [{"scheduler": sched, "interval": "step"}]
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
