"""Summarise the TSSL-BP paper check (MLP 400-400, T = 5, Fashion-MNIST), finished or stopped early.

For each run directory: the epochs completed (metrics.csv), validation accuracy per epoch, and the
test accuracy of the last completed epoch's weights (checkpoints/last.ckpt), against the paper's
89.75 ± 0.03 % after 100 epochs. Writes JSON and a per-epoch CSV.

    python -m leannet.cli train recipes/spiking/fashion_mnist_mlp.yaml trainer.threads=1 out_dir=runs/paper \
        name=mlp_tssl                                   # and: method.rule=surrogate name=mlp_surrogate
    python scripts/spiking_paper_check.py runs/paper/mlp_tssl runs/paper/mlp_surrogate --out results/spiking
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import lightning as L
import torch

from leannet.train.run import epoch_metrics, load_trained, quiet_lightning

PAPER = {"test_acc_mean": 0.8975, "test_acc_std": 0.0003, "test_acc_best": 0.8980, "epochs": 100}


def summarise(run_dir: Path) -> dict:
    rows = epoch_metrics(run_dir)
    # last.ckpt follows the best-validation checkpoint; trainer.save_epochs keeps epochN.ckpt exactly
    saved = sorted(int(p.stem[5:]) for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    which = f"epoch{saved[-1]}" if saved else "last"
    config, built = load_trained(run_dir, which)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    test = trainer.test(built.module, built.loaders.test, verbose=False)[0]
    val = [row["val/acc"] for row in rows if "val/acc" in row]
    final = run_dir / "results.json"
    finished = json.loads(final.read_text()) if final.is_file() else {}
    return {
        "run_dir": str(run_dir), "rule": config.method.get("rule", "tssl"),
        "fallback": config.method.get("fallback", "always"),
        "epochs_completed": len(rows), "planned_epochs": config.trainer.max_epochs,
        "checkpoint_tested": which, "test_acc_at_checkpoint": test["test/acc"],
        "test_acc_final": finished.get("test_acc"),
        "test_acc_last_epoch": finished.get("test_acc", test["test/acc"]),
        "val_acc_last_epoch": val[-1] if val else None,
        "best_val_acc": max(val) if val else None, "best_val_epoch": val.index(max(val)) + 1 if val else None,
        "val_acc_per_epoch": val,
        "train_loss_per_epoch": [row.get("train/loss") for row in rows],
        "firing_rate_per_epoch": [row.get("train/firing_rate") for row in rows],
        "silent_fraction_per_epoch": [row.get("train/silent_fraction") for row in rows],
        "epoch_seconds_mean": sum(r["train/epoch_time"] for r in rows) / len(rows) if rows else None,
    }


def plot(runs: list[dict], path: Path) -> None:
    """Validation accuracy per epoch of every run, with the paper's final test accuracy as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for run in runs:
        val = run["val_acc_per_epoch"]
        ax.plot(range(1, len(val) + 1), [100 * v for v in val],
                label=f"{run['rule']} ({len(val)} epochs; test {100 * run['test_acc_at_checkpoint']:.2f} % at "
                      f"{run['checkpoint_tested']})")
    ax.axhline(100 * PAPER["test_acc_mean"], color="k", ls="--", lw=1, label="paper, test after 100 epochs")
    ax.set(xlabel="epoch", ylabel="validation accuracy %", title="MLP 400-400, T = 5, Fashion-MNIST")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/spiking"))
    args = parser.parse_args()
    quiet_lightning()
    torch.set_num_threads(1)
    runs = [summarise(r) for r in args.run_dirs]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_check.json").write_text(json.dumps({"paper": PAPER, "runs": runs}, indent=2) + "\n")
    with open(args.out / "paper_check_epochs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rule", "epoch", "val_acc", "train_loss", "firing_rate", "silent_fraction"])
        for run in runs:
            for i, acc in enumerate(run["val_acc_per_epoch"]):
                writer.writerow([run["rule"], i + 1, acc, run["train_loss_per_epoch"][i],
                                 run["firing_rate_per_epoch"][i], run["silent_fraction_per_epoch"][i]])
    plot(runs, args.out / "paper_check.png")
    for run in runs:
        print(f"{run['rule']}: {run['epochs_completed']} epochs; test {100 * run['test_acc_at_checkpoint']:.2f} % at "
              f"{run['checkpoint_tested']}, final {run['test_acc_final']} "
              f"(paper {100 * PAPER['test_acc_mean']:.2f} ± {100 * PAPER['test_acc_std']:.2f} % after 100 epochs)")


if __name__ == "__main__":
    main()
