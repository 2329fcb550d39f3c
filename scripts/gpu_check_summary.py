"""Summarise scripts/gpu_check.sh's runs as markdown: TSSL-BP final vs best test epoch next to the paper,
and the KD family's per-variant test accuracy with the paired difference to the baseline.

    python scripts/gpu_check_summary.py runs/gpu_check runs/distill_fewshot100 [--json results/spiking/gpu_check.json]

`--json` also writes the TSSL-BP numbers ({run: {epochs, final, best, best_epoch}}), which REPRODUCTION.md reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leannet.report.repro import effect
from leannet.report.table import mean_std
from leannet.train.callbacks import read_metrics

PAPER = {"cnn_tssl": "92.69 ± 0.09 % (100 epochs)", "mlp_tssl": "89.75 ± 0.03 % (100 epochs)"}


def spiking_numbers(root: Path) -> dict[str, dict[str, float]]:
    """Per TSSL-BP run: epochs done, final and best test accuracy (val/acc is the test set: data.val_on_test)."""
    numbers = {}
    for name in PAPER:
        path = root / name / "metrics.csv"
        accs = [r["val/acc"] for r in read_metrics(path) if "val/acc" in r] if path.is_file() else []
        if accs:
            best = max(range(len(accs)), key=accs.__getitem__)
            numbers[name] = {"epochs": len(accs), "final": accs[-1], "best": accs[best], "best_epoch": best + 1}
    return numbers


def spiking_rows(numbers: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| run | epochs done | final test acc | best test epoch (paper's protocol) | paper |",
             "|---|---|---|---|---|"]
    for name, paper in PAPER.items():
        n = numbers.get(name)
        if n is None:
            lines.append(f"| {name} | 0 | – | – | {paper} |")
        else:
            lines.append(f"| {name} | {n['epochs']} | {100 * n['final']:.2f} % | {100 * n['best']:.2f} % "
                         f"(epoch {n['best_epoch']}) | {paper} |")
    return lines


def suite_rows(root: Path) -> list[str]:
    results: dict[str, dict[int, float]] = {}
    for path in sorted(root.glob("*/seed*/results.json")):
        data = json.loads(path.read_text())
        results.setdefault(path.parent.parent.name, {})[data["seed"]] = data["test_acc"]
    base = results.get("baseline", {})
    lines = ["| variant | n | final test acc | paired Δ vs baseline |", "|---|---|---|---|"]
    for variant, by_seed in results.items():
        mean, std = mean_std(list(by_seed.values()))
        seeds = sorted(set(by_seed) & set(base))
        size = effect([by_seed[s] for s in seeds], [base[s] for s in seeds], ">", True, 100.0, 2, " %") \
            if variant != "baseline" and seeds else "–"
        lines.append(f"| {variant} | {len(by_seed)} | {100 * mean:.2f} ± {100 * std:.2f} % | {size} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spiking_runs", type=Path)
    parser.add_argument("kd_runs", type=Path)
    parser.add_argument("--json", type=Path, help="also write the TSSL-BP numbers here")
    args = parser.parse_args()
    numbers = spiking_numbers(args.spiking_runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    print("\n".join(["## TSSL-BP, all 60,000 training images", ""] + spiking_rows(numbers)
                    + ["", "## KD family, few-shot suite", ""] + suite_rows(args.kd_runs)))


if __name__ == "__main__":
    main()
