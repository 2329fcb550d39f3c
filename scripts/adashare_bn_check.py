"""Which BatchNorm statistics should a gated multi-task network test with? Measured on finished runs.

For each run folder (a multi-task run of ``leannet train`` / the scenes suite), the same trained weights are
tested three ways, and Δm is computed against the single-task runs of the same suite (their mean over seeds):

- ``per_task_running``: what leannet does: each task's own running statistics, updated along its own path
  during training (``TaskNorm``);
- ``per_task_recomputed``: each task's statistics re-estimated after training, along its own path, as an exact
  average over the training split (the alternative design: re-estimation after training);
- ``mixed``: one set of statistics for every path, the mean over tasks of the re-estimated ones, as one running
  average over every path gives (the official code, which runs each task's path once per batch).

    python scripts/adashare_bn_check.py runs/multitask/scenes/{adashare,random,tree,hard}/seed0 \
        --single results/multitask/scenes --out results/multitask/scenes/bn_check.json

Stochastic depth (``method.drop_rate``) trains its running statistics on randomly shortened networks and tests
the full one with scaled residuals; re-estimation runs the network the test runs, so ``per_task_recomputed``
measures how much of its loss is that mismatch:

    python scripts/adashare_bn_check.py runs/multitask/scenes/stochastic_depth{,_low}/seed{0,1,2} \
        --single results/multitask/scenes --out results/multitask/scenes/bn_check_stochastic_depth.json
    python scripts/adashare_bn_check.py runs/multitask/scenes/stochastic_depth{,_low}/seed{0,1,2} --unscaled \
        --single results/multitask/scenes --out results/multitask/scenes/bn_check_stochastic_depth_unscaled.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import numpy as np

from leannet.multitask.adashare import reestimate_task_statistics, task_norms
from leannet.multitask.metrics import HIGHER_IS_BETTER, delta_m
from leannet.multitask.report import SINGLE, load_runs
from leannet.runio import write_json
from leannet.train.run import load_trained, quiet_lightning


def test_metrics(built) -> dict[str, dict[str, float]]:
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    result = trainer.test(built.module, built.loaders.test, verbose=False)[0]
    metrics: dict[str, dict[str, float]] = {}
    for key, value in result.items():
        task, _, name = key.removeprefix("test/").removeprefix("test_").partition("/")
        if name in HIGHER_IS_BETTER:
            metrics.setdefault(task, {})[name] = float(value)
    return metrics


def recompute_statistics(built) -> None:
    """Re-estimate every task's statistics along its own path: a cumulative average over the training split."""
    loader = built.loaders.train
    if hasattr(loader, "set_subset"):
        loader.set_subset(None)
    reestimate_task_statistics(built.method.model, built.method.eval_policy(), (x for x, _ in loader))


def mix_statistics(built) -> None:
    """Every task's rows replaced by their mean over tasks (one average over all paths)."""
    for layer in task_norms(built.method.model):
        for name in layer.stat_names:
            rows = getattr(layer, f"task_{name}")
            if rows.is_floating_point():
                rows.copy_(rows.mean(0, keepdim=True).expand_as(rows))


COLUMNS = ("per_task_running", "per_task_recomputed", "mixed")


def unscale(built, unscaled: bool) -> None:
    """With ``unscaled``, test stochastic depth's full network without Huang et al.'s p_l·F scaling."""
    if unscaled:
        for block in built.method.model.modules():
            if hasattr(block, "residual_scale"):
                block.residual_scale = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--single", type=Path, required=True, help="folder with the suite's single-task runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--unscaled", action="store_true",
                        help="stochastic depth: test every block at full scale (no survival-probability scaling)")
    args = parser.parse_args()
    quiet_lightning()
    single = [r for r in load_runs([args.single]) if r["variant"] == SINGLE]
    baseline: dict[str, dict[str, list[float]]] = {}
    for r in single:
        for task, values in r["metrics"].items():
            for name, value in values.items():
                baseline.setdefault(task, {}).setdefault(name, []).append(value)
    base = {t: {m: float(np.mean(v)) for m, v in ms.items()} for t, ms in baseline.items()}
    rows = []
    for run_dir in args.run_dirs:
        _, built = load_trained(run_dir, "last")
        unscale(built, args.unscaled)
        row = {"run": str(run_dir), "policy": built.method.execute.int().tolist()}
        row["per_task_running"] = delta_m(test_metrics(built), base)[0]
        _, recomputed = load_trained(run_dir, "last")
        unscale(recomputed, args.unscaled)
        recompute_statistics(recomputed)
        row["per_task_recomputed"] = delta_m(test_metrics(recomputed), base)[0]
        mix_statistics(recomputed)
        row["mixed"] = delta_m(test_metrics(recomputed), base)[0]
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    by_variant: dict[str, dict[str, dict[str, float]]] = {}  # variant -> statistics -> seedN -> Δm
    for row in rows:
        run = Path(row["run"])
        for column in COLUMNS:
            by_variant.setdefault(run.parent.name, {}).setdefault(column, {})[run.name] = row[column]
    write_json(args.out, {"baseline_runs": len(single), "runs": rows, "by_variant": by_variant,
                          "unscaled": args.unscaled,
                          "note": "Δm % vs the single-task mean; the same weights, three sets of BN statistics"})


if __name__ == "__main__":
    main()
