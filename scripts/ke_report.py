"""Summarise the Knowledge Evolution few-shot suites: per-generation dense/slim accuracy plot and table.

    PYTHONPATH=. python scripts/ke_report.py runs/ke/fewshot50 runs/ke/fewshot100 --out results/ke
    PYTHONPATH=. python scripts/ke_report.py results/ke/fewshot50 results/ke/fewshot100 --out results/ke  # the copies

Reads each suite's `<variant>/seed<s>/results.json` (written by `leannet suite recipes/ke/suite_*.yaml`),
writes `summary.json`, `summary.md`, `generations.png` and a copy of every run's results.json and
metrics.csv under `--out`. Accuracies are final-epoch test accuracies, mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def mean_std(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def summarise(suite_dir: Path) -> dict:
    variants = {}
    for variant in sorted(p for p in suite_dir.iterdir() if p.is_dir()):
        runs = [json.loads(p.read_text()) for p in sorted(variant.glob("seed*/results.json"))]
        if not runs:
            continue
        entry = {"seeds": [r["seed"] for r in runs], "epochs": runs[0]["epochs"],
                 "final_test_acc": mean_std([r["test_acc"] for r in runs])}
        if "generations" in runs[0]:
            count = min(len(r["generations"]) for r in runs)
            for key in ("test_acc", "slim_test_acc"):
                if all(key in g and g[key] is not None for r in runs for g in r["generations"][:count]):
                    entry[f"per_generation_{key}"] = [
                        mean_std([r["generations"][k][key] for r in runs]) for k in range(count)
                    ]
                    entry[f"per_seed_{key}"] = [[g[key] for g in r["generations"][:count]] for r in runs]
            for key in ("dense_macs", "slim_macs", "params", "slim_params"):
                if runs[0].get(key) is not None:
                    entry[key] = runs[0][key]
        variants[variant.name] = entry
    return variants


def _pct(value: list[float] | None) -> str:
    return "–" if value is None else f"{100 * value[0]:.2f} ± {100 * value[1]:.2f}"


def table(name: str, variants: dict) -> str:
    lines = [f"### {name}", "", "| variant | seeds | epochs so far | generation | dense test acc % | slim test acc % "
             "| slim, BN re-estimated % |", "|---|---|---|---|---|---|---|"]
    for variant, e in variants.items():
        dense = e.get("per_generation_test_acc")
        if dense:
            slim = e.get("per_generation_slim_test_acc") or [None] * len(dense)
            recal = e.get("per_generation_slim_bn_recal_test_acc") or [None] * len(dense)
            for k, (d, s, r) in enumerate(zip(dense, slim, recal, strict=True), 1):
                lines.append(f"| {variant} | {len(e['seeds'])} | {k * e['epochs'] // len(dense)} | {k} | "
                             f"{_pct(d)} | {_pct(s)} | {_pct(r)} |")
        else:
            m, s = e["final_test_acc"]
            lines.append(f"| {variant} | {len(e['seeds'])} | {e['epochs']} | (one run) | "
                         f"{100 * m:.2f} ± {100 * s:.2f} | – | – |")
    return "\n".join(lines) + "\n"


def add_recal(summaries: dict[str, dict], recal_path: Path) -> None:
    """Attach scripts/ke_slim_bn.py's slim accuracies with re-estimated BN statistics to the `ke` entries."""
    rows = json.loads(recal_path.read_text())
    for suite, variants in summaries.items():
        for variant, e in variants.items():
            mine = [r for r in rows if Path(r["run"]).parts[-3:-1] == (suite, variant)]
            if not mine:
                continue
            count = max(r["generation"] for r in mine)
            e["per_generation_slim_bn_recal_test_acc"] = [
                mean_std([r["slim_test_acc_bn_recal"] for r in mine if r["generation"] == k])
                for k in range(1, count + 1)
            ]


def plot(summaries: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(summaries), figsize=(5.5 * len(summaries), 4), squeeze=False)
    for ax, (name, variants) in zip(axes[0], summaries.items(), strict=True):
        for variant, e in variants.items():
            for key, style, label in (("per_generation_test_acc", "-o", "dense"),
                                      ("per_generation_slim_test_acc", "--s", "slim"),
                                      ("per_generation_slim_bn_recal_test_acc", ":^", "slim, BN re-estimated")):
                series = e.get(key)
                if series:
                    x = range(1, len(series) + 1)
                    m = [100 * v[0] for v in series]
                    s = [100 * v[1] for v in series]
                    ax.errorbar(x, m, yerr=s, fmt=style, capsize=3, label=f"{variant} {label}")
            if "per_generation_test_acc" not in e:
                m, s = (100 * v for v in e["final_test_acc"])
                ax.axhline(m, color="k", linestyle=":", label=f"{variant} ({e['epochs']} epochs in one go)")
                ax.axhspan(m - s, m + s, color="k", alpha=0.08)
        ax.set_title(name)
        ax.set_xlabel("generation (8 epochs each)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+")
    parser.add_argument("--out", default="results/ke")
    parser.add_argument("--recal", type=Path, help="scripts/ke_slim_bn.py output to add to the plot")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {Path(s).name: summarise(Path(s)) for s in args.suites}
    if args.recal:
        add_recal(summaries, args.recal)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    (out / "summary.md").write_text("\n".join(table(n, v) for n, v in summaries.items()))
    plot(summaries, out / "generations.png")
    for suite in map(Path, args.suites):
        for result in suite.glob("*/seed*/results.json"):
            target = out / suite.name / result.parent.relative_to(suite)
            if target.resolve() == result.parent.resolve():  # summarising the committed copies in place
                continue
            target.mkdir(parents=True, exist_ok=True)
            for name in ("results.json", "metrics.csv"):
                if (result.parent / name).is_file():
                    shutil.copy(result.parent / name, target / name)
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
