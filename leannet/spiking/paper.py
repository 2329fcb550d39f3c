"""TSSL-BP's Fashion-MNIST table like for like: the paper-scale suites' test curves against the paper's numbers.

The suites (recipes/spiking/suite_paper_mlp.yaml, suite_paper_cnn.yaml) evaluate the test set after every epoch
in the validation slot (data.val_on_test), so each run's metrics.csv holds its test-accuracy curve. Per run:

    final   the test accuracy after the last epoch (leannet's protocol)
    best    the highest test accuracy over the epochs (the paper's protocol: the official code reports the best
            test epoch), with its epoch

A run is *finished* when it has results.json (its published copy under the suite's results_dir, or its run folder
under runs/), else *partial* (metrics.csv only, labelled with its epoch count; a stopped run resumes from
checkpoints/last.ckpt). Means over seeds use finished runs only. The comparison with the paper's mean μ_p ± σ_p:
the difference of means against 2 standard errors, SE = sqrt(s²/n + σ_p²) (the paper's std stands in for the
uncertainty of its mean: it does not say over how many runs) — "matches" within, "above" / "below" beyond.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from leannet.config import read_yaml
from leannet.report.table import mean_std
from leannet.runio import read_metrics

# Quoted from ../shared/papers/tsslbp.md (official README: mean ± std over runs / best run), test accuracy.
PAPER = {
    "mlp": {"network": "MLP 400-400-10", "mean": 0.8975, "std": 0.0003, "best": 0.8980, "epochs": 100},
    "cnn": {"network": "CNN 32C5-P2-64C5-P2-1024-10", "mean": 0.9269, "std": 0.0009, "best": 0.9283, "epochs": 100},
}


def accuracy_curve(run_dir: Path) -> list[float]:
    """Test accuracy per epoch (val/acc of a data.val_on_test run), in epoch order."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    rows = sorted((r for r in read_metrics(path) if "val/acc" in r), key=lambda r: r["epoch"])
    return [r["val/acc"] for r in rows]


def curve_gap(run_a: Path, run_b: Path) -> dict[str, Any] | None:
    """How far two runs' test curves are apart over the epochs both finished (e.g. the same seed on two
    devices): the largest and the mean absolute difference, in accuracy units; ``None`` without a shared epoch."""
    a, b = accuracy_curve(run_a), accuracy_curve(run_b)
    gaps = [abs(x - y) for x, y in zip(a, b, strict=False)]
    if not gaps:
        return None
    return {"epochs": len(gaps), "max_abs": max(gaps), "mean_abs": sum(gaps) / len(gaps)}


def run_summary(run_dir: Path, planned_epochs: int | None = None) -> dict[str, Any] | None:
    """One run's curve, final and best test accuracy, and whether it finished; None without a metrics.csv."""
    curve = accuracy_curve(run_dir)
    if not curve:
        return None
    results = run_dir / "results.json"
    finished = json.loads(results.read_text()) if results.is_file() else None
    config = run_dir / "config.yaml"
    val_on_test = bool(read_yaml(config).get("data", {}).get("val_on_test")) if config.is_file() else None
    best = max(curve)
    return {
        "run_dir": str(run_dir), "finished": finished is not None, "epochs": len(curve),
        "planned_epochs": planned_epochs, "val_is_test": val_on_test,
        "final": float(finished["test_acc"]) if finished and finished.get("test_acc") is not None else curve[-1],
        "best": best, "best_epoch": curve.index(best) + 1, "curve": curve,
        "epoch_seconds": finished.get("epoch_seconds") if finished else None,
        "train_seconds": finished.get("train_seconds") if finished else None,
    }


def compare(values: list[float], paper: dict[str, float]) -> dict[str, Any]:
    """Mean ± std of `values` against the paper's mean ± std (see the module doc for the rule)."""
    if not values:
        return {"n": 0, "verdict": "not run yet"}
    mean, std = mean_std(values)
    delta = mean - paper["mean"]
    out = {"n": len(values), "mean": mean, "std": std, "minus_paper": delta, "max": max(values)}
    if len(values) < 2:
        out["verdict"] = "one seed: no spread to judge by"
        return out
    se = math.sqrt(std**2 / len(values) + paper["std"] ** 2)
    out["se"] = se
    out["verdict"] = "matches the paper" if abs(delta) <= 2 * se else (
        "above the paper" if delta > 0 else "below the paper")
    return out


def suite_runs(suite_path: str | Path, publish_partial: bool = False,
               overrides: list[str] = ()) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """Every run of a suite that has a curve, per variant: the published copy when it finished, else the run
    folder under runs/ (finished or partial). `publish_partial` copies a partial run's metrics.csv and
    config.yaml to the results_dir (never results.json: the copy stays partial) so the report can be rebuilt
    from committed files."""
    from leannet.train.suite import load_suite

    suite, runs = load_suite(suite_path, overrides)
    found: dict[str, list[dict[str, Any]]] = {variant: [] for variant in suite.variants}
    for run in runs:
        published = Path(suite.results_dir) / run.variant / f"seed{run.seed}" if suite.results_dir else None
        candidates = [d for d in (published, run.run_dir) if d is not None]
        finished = [d for d in candidates if (d / "results.json").is_file()]
        partial = [d for d in (run.run_dir, published) if d is not None and (d / "metrics.csv").is_file()]
        where = finished[0] if finished else max(partial, key=lambda d: len(accuracy_curve(d)), default=None)
        if where is None:
            continue
        if publish_partial and not finished and published is not None and where == run.run_dir:
            published.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.csv", "config.yaml"):
                if (where / name).is_file():
                    shutil.copyfile(where / name, published / name)
        summary = run_summary(where, run.config.trainer.max_epochs)
        if summary is not None:
            found[run.variant].append(summary | {"seed": run.seed})
    return suite, found


def variant_summary(runs: list[dict[str, Any]], paper: dict[str, float]) -> dict[str, Any]:
    """Final and best over the finished runs, each against the paper; partial runs listed with their epochs."""
    done = [r for r in runs if r["finished"]]
    return {
        "finished_seeds": [r["seed"] for r in done],
        "partial": [{"seed": r["seed"], "epochs": r["epochs"], "planned_epochs": r["planned_epochs"],
                     "final": r["final"], "best": r["best"], "best_epoch": r["best_epoch"]}
                    for r in runs if not r["finished"]],
        "final": compare([r["final"] for r in done], paper),
        "best_test_epoch": compare([r["best"] for r in done], paper),
        "runs": runs,
    }


def summarise(suites: dict[str, str | Path], publish_partial: bool = False,
              overrides: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """summary.json's content: per network (mlp, cnn: the keys of PAPER) and variant, see `variant_summary`;
    `overrides[network]`: the key=value overrides that network's suite was run with."""
    out: dict[str, Any] = {"paper": PAPER, "protocols": {
        "final": "test accuracy after the last epoch (leannet's protocol)",
        "best_test_epoch": "highest test accuracy over the epochs (the paper's protocol)"}}
    for network, path in suites.items():
        suite, found = suite_runs(path, publish_partial, (overrides or {}).get(network, []))
        out[network] = {"suite": str(path), "title": suite.title,
                        "variants": {v: variant_summary(runs, PAPER[network]) for v, runs in found.items()}}
    return out


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """Per network and variant: final and best-test-epoch accuracy over finished seeds vs the paper, the
    verdicts, and every partial run with its epoch count."""
    lines = ["| network | rule | protocol | finished seeds | test acc % (mean ± std) | max over seeds | "
             "paper % (mean ± std / best) | mean − paper (points) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    partial = []
    for network in PAPER:
        if network not in summary:
            continue
        paper = summary["paper"][network]
        quoted = f"{_pct(paper['mean'])} ± {_pct(paper['std'])} / {_pct(paper['best'])}"
        for variant, data in summary[network]["variants"].items():
            for protocol, label in (("final", "final epoch"), ("best_test_epoch", "best test epoch (paper's)")):
                c = data[protocol]
                shown = f"{_pct(c['mean'])} ± {_pct(c['std'])}" if c["n"] else "not run yet"
                delta = f"{100 * c['minus_paper']:+.2f}" if c["n"] else "–"
                lines.append(f"| {paper['network']} | {variant} | {label} | {c['n']} | {shown} "
                             f"| {_pct(c.get('max'))} | {quoted} | {delta} | {c['verdict']} |")
            for p in data["partial"]:
                partial.append(f"- {paper['network']}, {variant}, seed {p['seed']}: partial, {p['epochs']} of "
                               f"{p['planned_epochs']} epochs: test {_pct(p['final'])} % after epoch {p['epochs']}, "
                               f"best {_pct(p['best'])} % (epoch {p['best_epoch']})")
    text = "\n".join(lines) + "\n"
    if partial:
        text += "\nRuns not finished (not in the means above):\n\n" + "\n".join(partial) + "\n"
    return text


def plot_curves(summary: dict[str, Any], path: Path) -> Path | None:
    """Test accuracy per epoch of every run (one panel per network), the paper's mean ± std as a band and its best
    run as a dotted line; partial runs are dashed and labelled with their epoch count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = [n for n in PAPER if n in summary and any(d["runs"] for d in summary[n]["variants"].values())]
    if not networks:
        return None
    fig, axes = plt.subplots(1, len(networks), figsize=(6.2 * len(networks), 4.2), squeeze=False)
    for ax, network in zip(axes[0], networks, strict=True):
        paper = summary["paper"][network]
        for k, (variant, data) in enumerate(summary[network]["variants"].items()):
            for run in data["runs"]:
                state = "" if run["finished"] else f", partial: {run['epochs']} of {run['planned_epochs']} epochs"
                ax.plot(range(1, run["epochs"] + 1), [100 * v for v in run["curve"]], color=f"C{k}", lw=1,
                        ls="-" if run["finished"] else "--", marker="" if run["finished"] else "o", ms=2.5,
                        label=f"{variant} seed {run['seed']}{state}")
        m, s = 100 * paper["mean"], 100 * paper["std"]
        ax.axhspan(m - s, m + s, color="k", alpha=0.15)
        ax.axhline(m, color="k", lw=1, label=f"paper {m:.2f} ± {s:.2f} % after {paper['epochs']} epochs")
        ax.axhline(100 * paper["best"], color="k", lw=1, ls=":", label=f"paper's best run {100 * paper['best']:.2f} %")
        lows = [100 * min(r["curve"][len(r["curve"]) // 10:] or r["curve"])
                for d in summary[network]["variants"].values() for r in d["runs"]]
        ax.set_ylim(min([*lows, m - 3]) - 0.5, max(m, 100 * paper["best"]) + 1.5)
        planned = max(r["planned_epochs"] or r["epochs"] for d in summary[network]["variants"].values()
                      for r in d["runs"])
        ax.set(xlabel="epoch", ylabel="test accuracy % (evaluated after every epoch)", xlim=(0, planned + 2),
               title=f"{paper['network']}, T = 5")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("TSSL-BP's Fashion-MNIST table on this CPU: test accuracy per epoch against the paper")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
