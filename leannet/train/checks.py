"""Checks of a resolved recipe before anything is written to disk.

The schema (`leannet.config`) validates keys and types; these checks validate values. Each failure is
one `LeannetError` line naming the key (or file) and the fix, raised before a run directory exists.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from leannet.errors import LeannetError
from leannet.runio import describe_os_error  # noqa: F401  (here first; the CLI imports it from this module)

# Lightning's accepted `precision` strings (lightning.fabric.connector._PRECISION_INPUT)
PRECISIONS = ("32-true", "32", "16-mixed", "16-true", "16", "bf16-mixed", "bf16-true", "bf16", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")
PROGRESS = ("auto", "bar", "none")
PROBE_BYTES = 64 * 1024  # written and deleted in out_dir: fails on a full or read-only file system


def at_least(key: str, value: Any, low: float, example: Any) -> None:
    """`value` must be a number >= `low` (NaN fails), else an error naming `key` with an example fix."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or \
            math.isnan(value) or value < low:
        raise LeannetError(f"{key} must be >= {low:g}, got {value}; set e.g. {key}={example}")


def positive(key: str, value: Any, example: Any) -> None:
    """`value` must be a number > 0 (NaN fails), else an error naming `key` with an example fix."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or \
            math.isnan(value) or value <= 0:
        raise LeannetError(f"{key} must be > 0, got {value}; set e.g. {key}={example}")


def one_of(key: str, value: Any, valid: tuple[str, ...] | list[str]) -> None:
    if str(value) not in valid:
        raise LeannetError(f"unknown {key} '{value}'; valid values: {', '.join(valid)}")


def check_recipe(config: Any, run_dir: str | Path | None = None) -> None:
    """Every value of a resolved training recipe that would otherwise fail mid-run or silently.

    `run_dir`: the folder a resumed run writes to (default: the recipe's `out_dir` is checked).
    """
    from leannet.train.optim import OPTIMIZERS, SCHEDULES

    t, data, optim = config.trainer, config.data, config.optim
    at_least("trainer.max_epochs", t.max_epochs, 1, 5)
    one_of("trainer.precision", t.precision, PRECISIONS)
    check_precision(config)
    one_of("trainer.progress", t.progress, PROGRESS)
    if t.threads is not None:
        at_least("trainer.threads", t.threads, 1, 1)
    at_least("trainer.log_every_n_steps", t.log_every_n_steps, 1, 50)
    if t.limit_train_batches is not None:
        positive("trainer.limit_train_batches", t.limit_train_batches, 10)
    if t.tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise LeannetError("trainer.tensorboard=true needs the tensorboard extra: "
                           "pip install 'leannet[tensorboard]' (or set trainer.tensorboard=false)")
    at_least("data.batch_size", data.batch_size, 1, 128)
    at_least("data.eval_batch_size", data.eval_batch_size, 1, 512)
    at_least("data.val_size", data.val_size, 0, 5000)
    at_least("data.num_workers", data.num_workers, 0, 0)
    one_of("optim.name", optim.name, OPTIMIZERS.names())
    one_of("schedule.name", config.schedule.name, SCHEDULES.names())
    at_least("optim.lr", optim.lr, 0, 0.1)  # 0 keeps the weights fixed (a control run)
    at_least("optim.weight_decay", optim.weight_decay, 0, 5.0e-4)
    at_least("optim.momentum", optim.momentum, 0, 0.9)
    if optim.momentum >= 1:  # SGD accepts any momentum >= 0; 1 and above make the steps grow without bound
        raise LeannetError(f"optim.momentum must be < 1, got {optim.momentum:g}; set e.g. optim.momentum=0.9")
    betas = list(optim.betas)
    if len(betas) != 2 or not all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1
                                  for b in betas):
        raise LeannetError(f"optim.betas must be two numbers in [0, 1), got {betas}; set e.g. optim.betas=[0.9,0.999]")
    at_least("schedule.warmup_epochs", config.schedule.warmup_epochs, 0, 0.5)
    check_writable("out_dir", run_dir if run_dir is not None else config.out_dir)


def check_precision(config: Any) -> None:
    """`trainer.precision` must suit the device the run will use and the recipe's method (one-line refusal)."""
    import torch

    from leannet.method import METHODS
    from leannet.train.precision import device_type, precision_refusal

    t, name = config.trainer, config.method.name
    refusals = METHODS.get(name).precision_refusals if name in METHODS else {}
    reason = precision_refusal(t.precision, device_type(t.accelerator, torch.cuda.is_available()), name, refusals)
    if reason:
        raise LeannetError(reason)


def check_writable(key: str, path: str | Path) -> None:
    """`path` (existing or not) must be a folder leannet can write files into; nothing is left behind."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = f"{existing} is a file" if existing != path else "it is a file"
        raise LeannetError(f"{key} {path} cannot be a folder: {what}; set {key}= to a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".leannet-write-test-") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise LeannetError(f"cannot write to {key} {path}: {describe_os_error(err)}; "
                           f"set {key}= to a writable folder with free space") from None


def check_resume(module: Any, checkpoint: str | Path) -> None:
    """The checkpoint a run resumes from must hold the built module's tensors, same shapes (same model, method).

    Extra non-float tensors in the checkpoint are allowed: buffers a callback attaches once training
    starts (e.g. Knowledge Evolution's boolean masks) are not on a freshly built module.
    """
    from leannet.runio import safe_torch_load

    saved = safe_torch_load(checkpoint).get("state_dict", {})
    own = module.state_dict()
    missing = sorted(set(own) - set(saved))
    extra = sorted(k for k in set(saved) - set(own) if torch.is_tensor(saved[k]) and saved[k].is_floating_point())
    shapes = sorted(k for k in set(own) & set(saved) if torch.is_tensor(own[k])  # (not a module's extra state)
                    and tuple(own[k].shape) != tuple(getattr(saved[k], "shape", ())))
    if missing or extra or shapes:
        first = (shapes or missing or extra)[0]
        raise LeannetError(
            f"checkpoint {checkpoint} was written by another model or method than the run's config "
            f"({len(missing)} tensors missing, {len(extra)} unexpected, {len(shapes)} of another shape, e.g. "
            f"'{first}'); resume without overrides that change the model, the method or a model transform, "
            "or start a new run"
        )
