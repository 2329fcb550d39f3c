"""Lightning plug-ins for the run directory: atomic checkpoints, throughput, plain epoch log lines."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from leannet.runio import atomic_torch_save, read_metrics, safe_torch_load, write_metrics
from leannet.train.module import NonFiniteLossError

__all__ = [
    "AtomicCheckpointIO", "EpochCheckpoints", "EpochMonitor", "FailAfterEpoch", "FiniteGuard", "RunCheckpoint",
    "TrainClock", "atomic_torch_save", "read_metrics", "safe_torch_load", "write_metrics",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically and always loads with `weights_only=True`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return safe_torch_load(path, map_location=map_location or "cpu")


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose saved state follows its run folder when the folder is moved or copied.

    Lightning restores the best score only when the checkpoint folder's absolute path is unchanged: in a
    moved or copied run the first epoch after a resume would replace best.ckpt whatever its score, and
    the best checkpoint's test would read the old folder's file. Paths in the state are re-rooted here.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved is not None and self.dirpath is not None and saved != self.dirpath:
            def here(path: Any) -> Any:
                return str(Path(self.dirpath) / Path(path).name) if path else path

            state_dict = {
                **state_dict, "dirpath": self.dirpath,
                **{key: here(state_dict.get(key)) for key in
                   ("best_model_path", "kth_best_model_path", "last_model_path") if key in state_dict},
                "best_k_models": {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
            }
        super().load_state_dict(state_dict)


class TrainClock(L.Callback):
    """Wall-clock seconds of `fit` summed over a run's resumed segments (kept in every checkpoint's state).

    A resumed run restores the seconds its checkpoint had counted; time spent after that checkpoint in an
    interrupted segment is not counted, as its work is redone.
    """

    def __init__(self) -> None:
        self.before = 0.0
        self.start: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        """Seconds counted so far: the restored segments plus this one."""
        return self.before + (time.perf_counter() - self.start if self.start is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))


class FiniteGuard(L.Callback):
    """Stops training when a logged metric (validation included) or a weight is NaN or infinite.

    Runs before last.ckpt and best.ckpt are written (Lightning calls checkpoint callbacks after all others
    in a hook), so the last checkpoint on disk stays the last good one.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Raise NonFiniteLossError naming the first non-finite metric or weight."""
        bad = [f"{key} ({float(v)})" for key, v in trainer.callback_metrics.items()
               if v.numel() == 1 and not math.isfinite(float(v))]
        if not bad:
            weights = [name for name, t in pl_module.state_dict().items()
                       if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
            bad = [f"weights ({len(weights)} tensors, e.g. {weights[0]})"] if weights else []
        if bad:
            epoch = trainer.current_epoch
            kept = (f"last.ckpt (end of epoch {epoch}) is kept" if epoch > 0
                    else "no checkpoint was written")
            raise NonFiniteLossError(f"non-finite {', '.join(bad[:3])} after epoch {epoch + 1}; training stopped "
                                     f"and {kept}; lower optim.lr or check the data")


class EpochMonitor(L.Callback):
    """Per-epoch metrics: training images/s and time (validation excluded), `metrics.csv`, one log line.

    Written here rather than by Lightning's CSVLogger because that logger deletes an existing
    metrics file when a run is resumed; this one keeps the rows of the epochs before the resume.
    """

    KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/top5")

    def __init__(self, csv_path: str | Path | None = None, print_lines: bool = True) -> None:
        self.csv_path = Path(csv_path) if csv_path else None
        self.print_lines = print_lines
        self.rows: list[dict[str, float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not on_fit_start: a resumed run's epoch counter is restored only after that hook
        if self.csv_path and self.csv_path.is_file():
            self.rows = [r for r in read_metrics(self.csv_path) if r["epoch"] < trainer.current_epoch]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images = 0
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.images += batch[0].shape[0] * trainer.world_size
        self.last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = max(self.last - self.start, 1e-9)
        rate = self.images / seconds
        if trainer.global_rank != 0:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row |= {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        row |= {"lr": trainer.optimizers[0].param_groups[0]["lr"], "train/epoch_time": seconds,
                "train/images_per_s": rate}
        self.rows.append(row)
        if self.csv_path:
            write_metrics(self.csv_path, self.rows)
        if self.print_lines:
            parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
            parts += [f"{key} {row[key]:.4f}" for key in self.KEYS if key in row]
            parts += [f"{seconds:.1f}s", f"{rate:.0f} img/s"]
            print("  ".join(parts), flush=True)


class EpochCheckpoints(L.Callback):
    """Saves the weights `dirpath/epoch{N}.ckpt` after each (1-based) epoch N in `epochs` (e.g. De-KD teachers).

    Written through the trainer, so atomically (AtomicCheckpointIO) and by rank 0 only under DDP.
    """

    def __init__(self, dirpath: str | Path, epochs: list[int]) -> None:
        self.dirpath = Path(dirpath)
        self.epochs = set(epochs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.epochs:
            trainer.save_checkpoint(self.dirpath / f"epoch{epoch}.ckpt", weights_only=True)  # no optimizer state


class FailAfterEpoch(L.Callback):
    """Crashes at the start of the epoch after `epoch` (checkpointed by then): used by resume tests."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            raise InterruptedError(f"simulated crash after epoch {self.epoch}")
