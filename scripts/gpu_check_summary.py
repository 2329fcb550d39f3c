"""Summarise scripts/gpu_check.sh's runs as markdown: TSSL-BP final vs best test epoch next to the paper,
and the KD family's per-variant test accuracy with the paired difference to the baseline.

    python scripts/gpu_check_summary.py runs/gpu_check runs/distill_fewshot100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leannet.report.repro import effect
from leannet.report.table import mean_std
from leannet.train.callbacks import read_metrics

PAPER = {"cnn_tssl": "92.69 ± 0.09 % (100 epochs)", "mlp_tssl": "89.75 ± 0.03 % (100 epochs)"}


def spiking_rows(root: Path) -> list[str]:
    lines = ["| run | epochs done | final test acc | best test epoch (paper's protocol) | paper |",
             "|---|---|---|---|---|"]
    for name, paper in PAPER.items():
        path = root / name / "metrics.csv"
        rows = [r for r in read_metrics(path) if "val/acc" in r] if path.is_file() else []
        if not rows:
            lines.append(f"| {name} | 0 | – | – | {paper} |")
            continue
        accs = [r["val/acc"] for r in rows]
        best = max(range(len(accs)), key=accs.__getitem__)
        lines.append(f"| {name} | {len(accs)} | {100 * accs[-1]:.2f} % | {100 * accs[best]:.2f} % (epoch {best + 1}) "
                     f"| {paper} |")
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
    args = parser.parse_args()
    print("\n".join(["## TSSL-BP, all 60,000 training images", ""] + spiking_rows(args.spiking_runs)
                    + ["", "## KD family, few-shot suite", ""] + suite_rows(args.kd_runs)))


if __name__ == "__main__":
    main()
