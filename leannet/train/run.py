"""Run a recipe: build data, model and method from the config, train with Lightning, write the run dir.

Run directory layout:
    config.yaml        the resolved recipe
    env.json           git revision, package versions, machine, thread count and why
    .lock              held (flock) by the process that trains the run: one writer per folder (leannet.runlock)
    metrics.csv        per-epoch metrics (CSVLogger); tensorboard/ when enabled
    checkpoints/       last.ckpt and best.ckpt (atomic writes, loaded with weights_only=True)
    results.json       final and best accuracy, time, throughput, parameter count
"""

from __future__ import annotations

import logging
import math
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from leannet import signals
from leannet.config import load_recipe, to_dict
from leannet.data import Loaders, build_loaders
from leannet.errors import LeannetError, RunInterrupted
from leannet.method import METHODS, Method, build_method
from leannet.models import build_model, count_parameters
from leannet.plugins import load_plugins
from leannet.runio import CheckpointWriteError, epoch_metrics, remove_orphans, safe_torch_load, write_json
from leannet.runlock import RunLock, claim_run_dir, first_missing, is_rank_zero, remove_unused
from leannet.stages import active_loop, apply_transforms
from leannet.train.callbacks import (
    AtomicCheckpointIO,
    EpochCheckpoints,
    EpochMonitor,
    FiniteGuard,
    RunCheckpoint,
    TrainClock,
)
from leannet.train.checks import check_recipe, check_resume
from leannet.train.module import LeanModule, NonFiniteLossError
from leannet.train.threads import thread_count

RUN_DIR_ENV = "LEANNET_RUN_DIR"
PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "timm", "omegaconf", "numpy")
# data.* keys a resume may change: where the same data lie and how they are loaded, not which data they are
RESUME_DATA_KEYS = ("data.root", "data.num_workers", "data.eval_batch_size")
_held: list[RunLock] = []  # the run folders this process trains, outermost first


def quiet_lightning() -> None:
    """Silence Lightning's start-up banners and warnings that do not apply to in-memory loaders."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)`.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
    # best.ckpt's callback comes first on purpose (see make_trainer): ckpt_path="best" reads it
    warnings.filterwarnings("ignore", message=r".*configured with multiple `ModelCheckpoint` callbacks.*")


def environment(threads: tuple[int, str] = (0, "")) -> dict[str, Any]:
    """What produced a run: git revision, package versions, machine, and the thread count with its reason."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            timeout=5, cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "git_revision": rev or None,
        "git_dirty": bool(dirty),
        "python": sys.version.split()[0],
        "packages": versions,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads": {"count": threads[0] or torch.get_num_threads(), "reason": threads[1]},
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": sys.argv,
    }


def new_run_dir(config: DictConfig) -> Path:
    """A fresh directory `out_dir/name`, suffixed -2, -3 … so an earlier run is never overwritten; created here
    (atomically, `leannet.runlock.claim_run_dir`) so two runs started at once never pick the same one.

    Under DDP the launcher's child processes inherit `LEANNET_RUN_DIR` and reuse the parent's folder;
    under torchrun/SLURM (WORLD_SIZE > 1 for every process) the folder is `out_dir/name` as is, so all
    ranks agree on it: give such runs a unique `name`.
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    base = Path(config.out_dir) / config.name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return base
    return claim_run_dir(base)


@dataclass
class Built:
    loaders: Loaders
    method: Method
    module: LeanModule


def build(config: DictConfig) -> Built:
    """Data, model, method and the Lightning module for a resolved recipe (seeded)."""
    load_plugins(config.plugins)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = config.data
    loaders = build_loaders(
        data.name, root=data.root, batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
        val_size=data.val_size, val_on_test=data.val_on_test, few_shot=data.few_shot, augment=data.augment,
        loader=data.loader, num_workers=data.num_workers, seed=config.seed, **to_dict(data.args),
    )
    info = loaders.info
    model = build_model(
        config.model.name, num_classes=info.num_classes, in_channels=info.in_channels,
        norm=config.model.norm, width=config.model.width, image_size=info.image_size, tasks=info.tasks or None,
        **to_dict(config.model.args),
    )
    model = apply_transforms(model, config)  # e.g. the freeze: section (leannet.stages)
    if config.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = build_method(to_dict(config.method), model, info.num_classes,
                          input_shape=(info.in_channels, *info.image_size))
    if config.trainer.compile:
        method.model.compile()  # in place: state-dict keys stay those of the plain model
    module = LeanModule(method, config.optim, config.schedule, channels_last=config.trainer.channels_last)
    return Built(loaders, method, module)


def batch_limit(value: float | None) -> int | float | None:
    """Lightning reads a float as a fraction of the epoch and an int as a batch count."""
    return int(value) if value is not None and value > 1 else value


def make_trainer(config: DictConfig, run_dir: Path, callbacks: list[L.Callback] = (), has_val: bool = True,
                 monitor: tuple[str, str] = ("acc", "max"), planned: bool = False, unused_parameters: bool = False):
    """The Lightning trainer of a run; best.ckpt keeps the epoch with the best `val/<monitor[0]>`. `planned`:
    the training loader's length changes per epoch (a method's `train_subset`), so Lightning re-reads it.
    `unused_parameters`: the method leaves some parameters without gradient in some steps, so plain `ddp`
    becomes `ddp_find_unused_parameters_true`."""
    t = config.trainer
    strategy = "ddp_find_unused_parameters_true" if unused_parameters and t.strategy == "ddp" else t.strategy
    show_bar = t.progress == "bar" or (t.progress == "auto" and sys.stdout.isatty())
    best = RunCheckpoint(  # first: Lightning's ckpt_path="best" reads this one
        dirpath=run_dir / "checkpoints", filename="best", save_top_k=1,
        monitor=f"val/{monitor[0]}" if has_val else None, mode=monitor[1] if has_val else "max",
        enable_version_counter=False,  # mode "max" without val: unlike last's, so their state keys differ
    )
    # A separate callback for last.ckpt: with `save_last=True` Lightning only rewrites last.ckpt in epochs
    # where the monitored best improved, so a resume would restart from the best epoch, not the last one.
    last = RunCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1, monitor=None,
                           enable_version_counter=False)
    loggers: list[Any] = []
    if t.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""))
    extra: list[L.Callback] = [TQDMProgressBar()] if show_bar else []
    if t.save_epochs:
        outside = [e for e in t.save_epochs if not 1 <= e <= t.max_epochs]
        if outside:
            raise LeannetError(f"trainer.save_epochs {outside} outside 1..{t.max_epochs} (trainer.max_epochs)")
        extra.append(EpochCheckpoints(run_dir / "checkpoints", t.save_epochs))
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=t.precision, max_epochs=t.max_epochs, logger=loggers or False,
        callbacks=[EpochMonitor(run_dir / "metrics.csv", t.progress != "none"), FiniteGuard(), TrainClock(), best, last,
                   *extra, *callbacks],
        plugins=[AtomicCheckpointIO()], enable_progress_bar=show_bar, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=batch_limit(t.limit_train_batches), default_root_dir=run_dir,
        gradient_clip_val=t.gradient_clip_val, reload_dataloaders_every_n_epochs=int(planned),
    )


def _test_accuracy(trainer: L.Trainer, module: LeanModule, loaders: Loaders, ckpt: str | None) -> dict:
    rows = trainer.test(module, loaders.test, ckpt_path=ckpt, verbose=False, weights_only=True)
    return {key.split("/", 1)[1]: value for key, value in rows[0].items()} if rows else {}


def train(
    config: DictConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list[L.Callback] = (),
) -> dict[str, Any]:
    """Train one recipe; returns the results also written to `run_dir/results.json`."""
    quiet_lightning()
    check_recipe(config, run_dir)  # before any folder is created
    torch.set_num_threads(thread_count(config.trainer.threads)[0])  # the free cores unless trainer.threads is set
    load_plugins(config.plugins)
    loop = active_loop(config)  # a technique's own loop over ordinary runs (leannet.stages), or None
    if run_dir is not None:
        run_dir = Path(run_dir)
        last = run_dir / "checkpoints" / "last.ckpt"
        if resume and loop is None and not last.is_file():
            raise LeannetError(f"nothing to resume in {run_dir}: {last} is missing; start a new run instead")
        if resume:
            epoch_metrics(run_dir)  # a damaged metrics.csv is a one-line error before anything is rewritten
    created = first_missing(run_dir if run_dir is not None else Path(config.out_dir) / config.name)
    if run_dir is None:
        run_dir = new_run_dir(config)
        created = created or run_dir  # `name` existed: the claimed `name-2` is new
    lock = RunLock(run_dir) if is_rank_zero() else None  # DDP's other ranks write through rank 0
    previous = os.environ.get(RUN_DIR_ENV)
    if previous is None:  # a nested stage (Method.prepare) keeps the outer run's folder for DDP children
        os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        if lock is not None:
            _held.append(lock.acquire())
            if not resume or loop is not None:  # a plain resume announces itself once check_resume passed
                lock.announce()
            if removed := remove_orphans(run_dir):
                print(f"removed {len(removed)} temporary file(s) that an interrupted write left in {run_dir}",
                      flush=True)
        config = METHODS.get(config.method.name).prepare(config, run_dir)
        if loop is not None:
            return loop(config, run_dir, resume, list(callbacks), _train)
        return _train(config, run_dir, resume, list(callbacks))
    except CheckpointWriteError as err:
        then = (f"`leannet train --resume {run_dir}`" if (run_dir / "checkpoints" / "last.ckpt").is_file()
                else "start the run again")
        raise LeannetError(f"{err}; free space, then {then}") from None
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1), SIGTERM into SystemExit
        raise _interrupted(run_dir) from None
    except RunInterrupted:  # a nested stage (e.g. a teacher): the outer run is what to resume
        raise _interrupted(run_dir) from None
    finally:
        if lock is not None:
            _release(lock, created)
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def _release(lock: RunLock, created: Path | None) -> None:
    """Unlock a run folder; one this call `created` is removed again when the run stopped before writing to it."""
    if lock in _held:
        _held.remove(lock)
    if created is not None and lock.fd is not None:  # never another writer's folder (its lock was not ours)
        remove_unused(lock.run_dir, created)
    lock.release()


def _interrupted(run_dir: Path) -> RunInterrupted:
    """How to go on after Ctrl-C / SIGTERM: resume when a checkpoint is kept, else the same command again."""
    if (run_dir / "config.yaml").is_file():
        kept = (run_dir / "checkpoints" / "last.ckpt").is_file() or any(run_dir.glob("gen*/checkpoints/last.ckpt"))
    else:  # stopped in a prerequisite stage (e.g. a teacher), before this run's config was written
        kept = run_dir.is_dir() and any(run_dir.rglob("last.ckpt"))
    if kept and (run_dir / "config.yaml").is_file():
        command = f"leannet train --resume {run_dir}"
    else:
        command = " ".join(["leannet", *sys.argv[1:]]) if sys.argv[1:] else "the same command again"
    return RunInterrupted(f"run {run_dir}", command, signals.exit_code(), kept=kept)


def _train(config: DictConfig, run_dir: Path, resume: bool, callbacks: list[L.Callback]) -> dict[str, Any]:
    last = run_dir / "checkpoints" / "last.ckpt"
    built = build(config)
    if resume:
        check_resume(built.module, last)  # before config.yaml is rewritten
    for lock in _held:  # now the run will write: a second writer's error names this process
        lock.announce()
    has_val = built.loaders.val is not None
    planned = type(built.method).train_subset is not Method.train_subset
    if planned:
        if not hasattr(built.loaders.train, "plan"):
            raise LeannetError(f"method {config.method.name} trains on part of the data each epoch: it needs an "
                               "in-memory dense dataset (e.g. data.name=scenes_tasks)")
        built.loaders.train.plan = partial(built.method.train_subset, size=built.loaders.train.num_items)
    trainer = make_trainer(config, run_dir, callbacks, has_val=has_val, monitor=built.method.monitor, planned=planned,
                           unused_parameters=built.method.unused_parameters)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        write_json(run_dir / "env.json", environment(thread_count(config.trainer.threads)))
        params = count_parameters(built.method)
        trainable = count_parameters(built.method, trainable_only=True)
        print(f"run {run_dir}: {config.model.name} on {config.data.name}, method {config.method.name}, "
              f"{params:,} parameters ({trainable:,} trainable)", flush=True)
    trainer.fit(
        built.module, built.loaders.train, built.loaders.val if has_val else None,
        ckpt_path=str(last) if resume else None, weights_only=True,
    )
    train_seconds = next(c for c in trainer.callbacks if isinstance(c, TrainClock)).seconds()  # all segments
    final = _test_accuracy(trainer, built.module, built.loaders, ckpt=None)
    best = _test_accuracy(trainer, built.module, built.loaders, ckpt="best") if has_val and not _last_is_best(
        run_dir, trainer) else final
    for key, value in {**final, **best}.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteLossError(f"non-finite test {key} ({value}) of the trained weights; the checkpoints are "
                                     "kept and results.json is not written; lower optim.lr or check the data")
    results = summarize(config, run_dir, built.method, final, best, train_seconds, trainer)
    if trainer.is_global_zero:
        write_json(run_dir / "results.json", results)
    return results


def _last_is_best(run_dir: Path, trainer: L.Trainer) -> bool:
    """Whether best.ckpt holds the final weights (then its test accuracy is the final one)."""
    best = run_dir / "checkpoints" / "best.ckpt"
    return best.is_file() and safe_torch_load(best)["epoch"] == trainer.current_epoch - 1


def summarize(config, run_dir, method, final, best, train_seconds, trainer) -> dict[str, Any]:  # noqa: ANN001
    epochs = epoch_metrics(run_dir)
    val = [row["val/acc"] for row in epochs if "val/acc" in row]
    times = [row["train/epoch_time"] for row in epochs if "train/epoch_time" in row]
    rates = [row["train/images_per_s"] for row in epochs if "train/images_per_s" in row]
    results = {
        "name": config.name,
        "seed": config.seed,
        "model": config.model.name,
        "dataset": config.data.name,
        "method": config.method.name,
        "epochs": trainer.current_epoch,
        "test_acc": final.get("acc"),
        "train_acc": train[-1] if (train := [row["train/acc"] for row in epochs if "train/acc" in row]) else None,
        "test_acc_at_best_val": best.get("acc"),
        "val_acc": val[-1] if val else None,
        "best_val_acc": max(val) if val else None,
        "best_val_epoch": (val.index(max(val)) + 1) if val else None,
        "test_loss": final.get("loss"),
        "train_seconds": train_seconds,
        "epoch_seconds": sum(times) / len(times) if times else None,
        "images_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "params": count_parameters(method),
        "trainable_params": count_parameters(method, trainable_only=True),
    }
    if "top5" in final:
        results["test_top5"] = final["top5"]
    for key, value in final.items():  # named outputs (acc_exit1 …) and a method's own metrics (depth/abs_err …)
        if key.startswith(("acc_", "top5_")) or "/" in key:
            results[f"test_{key}"] = value
    if best is not final:
        results.update({f"test_{key}_at_best_val": value for key, value in best.items() if "/" in key})
    results.update(method.summary())
    return results


def resume(run_dir: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Continue `run_dir` from its last checkpoint with its saved config (plus overrides)."""
    run_dir = Path(run_dir)
    config = load_recipe(run_dir / "config.yaml", overrides)
    if overrides:
        saved = load_recipe(run_dir / "config.yaml")
        for key, (was, now) in _changes(saved, config).items():
            if key == "seed" or (key.startswith("data.") and key not in RESUME_DATA_KEYS):
                raise LeannetError(
                    f"--resume cannot change {key} (the run trained with {was}, the override asks for {now}): "
                    f"one run would mix two experiments; start a new run instead, e.g. "
                    f"`leannet train {run_dir / 'config.yaml'} {key}={now}`")
    return train(config, run_dir=run_dir, resume=True)


def _changes(old: DictConfig, new: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two resolved recipes, with (old, new)."""
    def flat(value: Any, key: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for name, item in value.items()
                    for k, v in flat(item, f"{key}.{name}" if key else name).items()}
        return {key: value}

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def load_trained(run_dir: str | Path, which: str = "last") -> tuple[DictConfig, Built]:
    """Rebuild a finished run's method and load its `last` or `best` checkpoint."""
    run_dir = Path(run_dir)
    config = load_recipe(run_dir / "config.yaml")
    built = build(config)
    state = safe_torch_load(run_dir / "checkpoints" / f"{which}.ckpt")
    try:
        built.module.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise LeannetError(
            f"checkpoint {run_dir / 'checkpoints' / f'{which}.ckpt'} does not match the run's config "
            f"({str(err).splitlines()[0][:120]}); was config.yaml edited?"
        ) from None
    return config, built
