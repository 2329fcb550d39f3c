"""The Knowledge Evolution training loop (Taha et al. 2021, Fig. 2 and §3): g generations of one recipe.

Generation 1 trains the network from its normal initialisation; generation k > 1 starts from
generation k−1's final weights, re-draws the reset hypothesis, and trains again with a fresh
optimizer and learning-rate schedule for the same number of epochs. Any method, model and norm of
the recipe works unchanged: each generation is an ordinary leannet run.

Run directory of an evolve run (``evolve.generations > 1``):
    config.yaml, env.json       the recipe and environment
    masks.pt                    the split masks {param name: bool mask}, fixed for all generations
    gen1/ … genG/               one ordinary run directory per generation (metrics, checkpoints,
                                results.json); genK/slim.json: the slim network's test accuracy (KELS)
    metrics.csv                 every generation's epochs, numbered continuously, with a generation column
    checkpoints/last.ckpt       the latest finished generation's dense weights (masks stripped)
    results.json               per-generation dense and slim test accuracy, and the final ones
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from leannet.data import build_loaders
from leannet.errors import LeannetError
from leannet.evolve.ke import MASK_PREFIX, REINITS, SPLITS, attach_masks, reinitialize, split_masks
from leannet.evolve.slim import count_macs, slim
from leannet.models import build_model, count_parameters
from leannet.runio import atomic_torch_save, read_metrics, safe_torch_load, write_json, write_metrics
from leannet.stages import register_loop

MODEL_PREFIX = "method.model."


def _rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def generation_dir(run_dir: Path, generation: int) -> Path:
    return Path(run_dir) / f"gen{generation}"


def reinit_generator(seed: int, generation: int) -> torch.Generator:
    """A generator private to generation k's re-draw (the data order and global RNG are untouched)."""
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + generation)


class GenerationStart(L.Callback):
    """At the start of generation k's fit: attach the masks; for k > 1 load generation k−1's final
    weights and re-initialise the reset hypothesis. On a resumed fit, Lightning restores the
    generation's own checkpoint after this hook, so a crash mid-generation resumes exactly.
    """

    def __init__(self, run_dir: Path, generation: int, evolve: DictConfig, seed: int) -> None:
        self.run_dir, self.generation, self.evolve, self.seed = Path(run_dir), generation, evolve, seed
        self.applied = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.applied:
            return
        self.applied = True
        model = pl_module.method.model
        masks_path = self.run_dir / "masks.pt"
        if self.generation == 1:
            masks = split_masks(model, self.evolve.split, self.evolve.rate, torch.Generator().manual_seed(self.seed))
            if trainer.is_global_zero:
                atomic_torch_save(masks, masks_path)
            attach_masks(model, masks)
            return
        attach_masks(model, safe_torch_load(masks_path))
        previous = generation_dir(self.run_dir, self.generation - 1) / "checkpoints" / "last.ckpt"
        pl_module.load_state_dict(safe_torch_load(previous)["state_dict"])
        reinitialize(model, None, self.evolve.reinit, reinit_generator(self.seed, self.generation))


def model_state(checkpoint_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own entries of a LeanModule state dict (``method.model.`` prefix removed)."""
    return {k[len(MODEL_PREFIX):]: v for k, v in checkpoint_state.items() if k.startswith(MODEL_PREFIX)}


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader: Any, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``loader``."""
    model.eval().to(device)
    correct, total = torch.zeros((), dtype=torch.long, device=device), 0
    for x, y in loader:
        logits = model(x.to(device, non_blocking=True))
        correct += (logits.argmax(1) == y.to(device, non_blocking=True)).sum()  # on the device: no sync per batch
        total += y.shape[0]
    return int(correct) / max(total, 1)


def build_dense(config: DictConfig, info: Any) -> torch.nn.Module:
    """The recipe's model (same constructor call as ``leannet.train.run.build``)."""
    return build_model(
        config.model.name, num_classes=info.num_classes, in_channels=info.in_channels, norm=config.model.norm,
        width=config.model.width, image_size=info.image_size, **OmegaConf.to_container(config.model.args),
    )


def load_generation(config: DictConfig, run_dir: Path, generation: int, info: Any) -> torch.nn.Module:
    """Generation k's final dense model, with its KE masks attached."""
    model = build_dense(config, info)
    attach_masks(model, safe_torch_load(Path(run_dir) / "masks.pt"))
    state = safe_torch_load(generation_dir(run_dir, generation) / "checkpoints" / "last.ckpt")["state_dict"]
    model.load_state_dict(model_state(state))
    return model


def evaluate_slim(config: DictConfig, run_dir: Path, generation: int, loaders: Any) -> dict[str, Any]:
    """Test accuracy, parameters and MACs of generation k's slim network (and of the dense one)."""
    info = loaders.info
    dense = load_generation(config, run_dir, generation, info)
    small = slim(dense)
    use_cuda = torch.cuda.is_available() and config.trainer.accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda" if use_cuda else "cpu")
    shape = (info.in_channels, *((info.image_size,) * 2 if isinstance(info.image_size, int) else info.image_size))
    dense_params = sum(v.numel() for k, v in dense.named_parameters())
    result = {
        "generation": generation,
        "slim_test_acc": accuracy(small, loaders.test, device),
        "slim_params": count_parameters(small),
        "dense_params": dense_params,
        "slim_macs": count_macs(small, shape),
        "dense_macs": count_macs(dense.to(device), shape),
    }
    small.cpu()
    atomic_torch_save({"state_dict": small.state_dict()}, generation_dir(run_dir, generation) / "slim.ckpt")
    return result


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_json(path, payload)  # atomic, strict JSON (a NaN becomes null, listed under non_finite)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _check_evolve(evolve: DictConfig) -> None:
    """Every value of the ``evolve:`` section, each failure one line naming the key and the valid values."""
    if evolve.generations < 1:
        raise LeannetError(f"evolve.generations must be >= 1 (1 = off), got {evolve.generations}; "
                           "set e.g. evolve.generations=5")
    if evolve.split not in SPLITS:
        raise LeannetError(f"unknown evolve.split '{evolve.split}'; valid values: {', '.join(SPLITS)}")
    if not 0.0 < evolve.rate <= 1.0:
        raise LeannetError(f"evolve.rate must be in (0, 1], got {evolve.rate}; the paper uses evolve.rate=0.5")
    if evolve.reinit not in REINITS:
        raise LeannetError(f"unknown evolve.reinit '{evolve.reinit}'; valid values: {', '.join(REINITS)}")


def _evolving(config: DictConfig) -> bool:
    """Whether the run trains generations (``evolve.generations > 1``). The section is checked either way, so
    that a typo in it (``evolve.split=kelz``, ``generations=0``) is an error, not a normal run."""
    _check_evolve(config.evolve)
    return config.evolve.generations > 1


def _publish_last(run_dir: Path, generation: int) -> None:
    """Copy generation k's final dense weights to run_dir/checkpoints/last.ckpt without the mask buffers."""
    source = safe_torch_load(generation_dir(run_dir, generation) / "checkpoints" / "last.ckpt")
    source["state_dict"] = {k: v for k, v in source["state_dict"].items() if MASK_PREFIX not in k}
    source["ke_generation"] = generation
    atomic_torch_save(source, run_dir / "checkpoints" / "last.ckpt")


def _merge_metrics(run_dir: Path, generations: int) -> None:
    rows, offset = [], 0
    for k in range(1, generations + 1):
        path = generation_dir(run_dir, k) / "metrics.csv"
        gen_rows = read_metrics(path) if path.is_file() else []
        rows += [r | {"epoch": r["epoch"] + offset, "generation": k} for r in gen_rows]
        offset += len(gen_rows)
    if rows:
        write_metrics(run_dir / "metrics.csv", rows)


@register_loop("evolve", active=_evolving)
def train_generations(
    config: DictConfig, run_dir: Path, resume: bool, callbacks: list[L.Callback], train_one: Any
) -> dict[str, Any]:
    """Run ``config.evolve.generations`` generations into ``run_dir/gen{k}`` (see the module doc).

    ``train_one(config, run_dir, resume, callbacks)`` trains one ordinary run (leannet's ``_train``).
    ``resume``: finished generations are kept, an interrupted one continues from its last.ckpt.
    Without ``resume`` existing generation folders are deleted and the run starts over.
    """
    evolve = config.evolve
    _check_evolve(evolve)
    run_dir = Path(run_dir)
    if resume and not (generation_dir(run_dir, 1) / "checkpoints" / "last.ckpt").is_file():
        raise LeannetError(f"nothing to resume in {run_dir}: gen1/checkpoints/last.ckpt is missing; start a new run")
    if not resume and _rank_zero():
        for old in run_dir.glob("gen*"):
            shutil.rmtree(old)
    if _rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    slim_loaders = None
    rows = []
    for k in range(1, evolve.generations + 1):
        gen_dir = generation_dir(run_dir, k)
        gen_config = OmegaConf.merge(config, {"name": f"{config.name}.gen{k}"})
        if (gen_dir / "results.json").is_file():
            result = json.loads((gen_dir / "results.json").read_text())
        else:
            partial = resume and (gen_dir / "checkpoints" / "last.ckpt").is_file()
            print(f"KE generation {k}/{evolve.generations}{' (resumed)' if partial else ''}", flush=True)
            start = GenerationStart(run_dir, k, evolve, config.seed)
            result = train_one(gen_config, gen_dir, partial, [*callbacks, start])
        row = {"generation": k, "test_acc": result.get("test_acc"),
               "test_acc_at_best_val": result.get("test_acc_at_best_val"), "val_acc": result.get("val_acc"),
               "train_seconds": result.get("train_seconds"), "epochs": result.get("epochs"),
               "params": result.get("params"), "trainable_params": result.get("trainable_params"),
               "epoch_seconds": result.get("epoch_seconds"), "images_per_s": result.get("images_per_s"),
               "best_val_acc": result.get("best_val_acc")}
        if evolve.split == "kels" and evolve.slim_eval and _rank_zero():
            slim_path = gen_dir / "slim.json"
            if not slim_path.is_file():
                if slim_loaders is None:
                    d = config.data
                    slim_loaders = build_loaders(
                        d.name, root=d.root, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                        val_size=d.val_size, few_shot=d.few_shot, augment=d.augment, loader=d.loader,
                        num_workers=d.num_workers, seed=config.seed, **OmegaConf.to_container(d.args),
                    )
                _write_json(slim_path, evaluate_slim(config, run_dir, k, slim_loaders))
            row |= json.loads(slim_path.read_text())
        rows.append(row)
        if _rank_zero():
            _publish_last(run_dir, k)
            _merge_metrics(run_dir, k)
            print(f"KE generation {k}: dense test acc {row['test_acc']:.4f}"
                  + (f", slim {row['slim_test_acc']:.4f}" if "slim_test_acc" in row else ""), flush=True)
    last = rows[-1]
    results = {
        "name": config.name, "seed": config.seed, "model": config.model.name, "dataset": config.data.name,
        "method": config.method.name, "evolve": OmegaConf.to_container(evolve),
        "epochs": sum(r["epochs"] or 0 for r in rows), "test_acc": last["test_acc"],
        "test_acc_at_best_val": last["test_acc_at_best_val"], "val_acc": last["val_acc"],
        "slim_test_acc": last.get("slim_test_acc"), "train_seconds": sum(r["train_seconds"] or 0 for r in rows),
        "params": last["params"], "trainable_params": last["trainable_params"],
        "epoch_seconds": _mean([r["epoch_seconds"] for r in rows]),
        "images_per_s": _mean([r["images_per_s"] for r in rows]),
        "best_val_acc": max((r["best_val_acc"] for r in rows if r["best_val_acc"] is not None), default=None),
        "slim_params": last.get("slim_params"),
        "dense_macs": last.get("dense_macs"), "slim_macs": last.get("slim_macs"), "generations": rows,
    }
    if _rank_zero():
        _write_json(run_dir / "results.json", results)
    return results
