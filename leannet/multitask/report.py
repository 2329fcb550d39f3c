"""Comparison of multi-task runs: a markdown table of every metric, Δm vs single-task, parameters and
executed blocks; and the learned policy grid (blocks × tasks, execute probability)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from leannet.errors import LeannetError
from leannet.multitask.metrics import HIGHER_IS_BETTER, delta_m

METHOD_ORDER = ("single", "hard", "random", "adashare")
RUN_KEYS = {"metrics", "seed", "params", "executed_blocks", "num_blocks", "seconds"}
LABELS = {"single": "single-task", "hard": "hard sharing", "random": "random policy", "adashare": "AdaShare"}


def load_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Run results under ``paths``: ``results.json`` of run directories and ``<method>-seed<N>.json`` copies."""
    found = set()
    for p in map(Path, paths):
        if not p.exists():
            raise LeannetError(f"no such file or directory: {p}; give multi-task run folders (e.g. runs/multitask)")
        found |= {p} if p.is_file() else {*p.rglob("results.json"), *p.rglob("*-seed*.json")}
    runs = []
    for f in sorted(found):
        try:
            run = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LeannetError(f"{f} is not valid JSON ({err}); delete it or leave its folder out") from None
        if isinstance(run, dict) and run.get("method") in METHOD_ORDER and run.keys() >= RUN_KEYS:
            runs.append(run)
    if not runs:
        where = ", ".join(map(str, paths))
        raise LeannetError(f"no multi-task results under {where} ({len(found)} JSON files, none from "
                           "`python -m leannet.multitask run`); point to runs/multitask or results/adashare")
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds per method of every metric, Δm (vs the single-task mean), params, blocks."""
    single = [r for r in runs if r["method"] == "single"]
    baseline = {t: {m: float(np.mean([r["metrics"][t][m] for r in single])) for m in v}
                for t, v in single[0]["metrics"].items()} if single else None
    out: dict[str, Any] = {}
    for method in METHOD_ORDER:
        group = [r for r in runs if r["method"] == method]
        if not group:
            continue
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in group)}
        for task, values in group[0]["metrics"].items():
            for m in values:
                row[f"{task}/{m}"] = _ms([r["metrics"][task][m] for r in group])
        if baseline is not None:
            deltas = [delta_m(r["metrics"], baseline) for r in group]
            row["delta_m"] = _ms([d[0] for d in deltas])
            row["delta_m_per_seed"] = [float(d[0]) for d in deltas]
            for task in group[0]["metrics"]:
                row[f"delta/{task}"] = _ms([d[1][task] for d in deltas])
        row["params"] = _ms([r["params"] for r in group])
        row["avg_executed_blocks"] = _ms([float(np.mean(list(r["executed_blocks"].values()))) for r in group])
        row["num_blocks"] = group[0]["num_blocks"]
        row["seconds"] = _ms([r["seconds"] for r in group])
        out[method] = row
    return out


def _ms(values: list[float]) -> list[float]:
    """Mean and sample standard deviation (ddof 1, as everywhere in leannet's reports)."""
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables: one per task, then Δm / params / blocks."""
    methods = [m for m in METHOD_ORDER if m in summary]
    lines = []
    metric_keys = [k for k in summary[methods[0]] if "/" in k and not k.startswith("delta/")]
    tasks = list(dict.fromkeys(k.split("/")[0] for k in metric_keys))
    for task in tasks:
        keys = [k for k in metric_keys if k.startswith(task + "/")]
        heads = [f"{k.split('/')[1]} {'↑' if HIGHER_IS_BETTER[k.split('/')[1]] else '↓'}" for k in keys]
        lines += [f"**{task}**", "", "| method | " + " | ".join(heads) + " |", "|---" * (len(keys) + 1) + "|"]
        for m in methods:
            cells = [_fmt(summary[m][k], k.split("/")[1]) for k in keys]
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| method | Δm % ↑ | " + " | ".join(f"Δ {t} %" for t in tasks)
              + " | params | avg executed blocks / task | seconds | seeds |",
              "|---" * (len(tasks) + 6) + "|"]
    for m in methods:
        row = summary[m]
        deltas = [_pm(row[f"delta/{t}"], 2) if f"delta/{t}" in row else "–" for t in tasks]
        lines.append(f"| {LABELS[m]} | {_pm(row['delta_m'], 2) if 'delta_m' in row else '–'} | "
                     + " | ".join(deltas)
                     + f" | {row['params'][0]:,.0f} | {row['avg_executed_blocks'][0]:.2f} / {row['num_blocks']}"
                     + f" | {row['seconds'][0]:.0f} | {', '.join(map(str, row['seeds']))} |")
    return "\n".join(lines) + "\n"


def _fmt(ms: list[float], metric: str) -> str:
    percent = metric in ("miou", "pixel_acc", "delta1") or metric.startswith("within")
    return _pm([v * 100 for v in ms], 2) if percent else _pm(ms, 3 if "err" in metric else 2)


def _pm(ms: list[float], digits: int) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def plot_policy(run: dict[str, Any], path: Path) -> Path:
    """The learned policy grid of an AdaShare run: tasks × blocks, colour = p(execute), ✓ = executed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.array(run["p_execute"])
    chosen = np.array(run["policy"])
    fig, ax = plt.subplots(figsize=(0.55 * p.shape[1] + 2, 0.55 * p.shape[0] + 1.2))
    im = ax.imshow(p, cmap="Blues", vmin=0, vmax=1)
    for (t, l), value in np.ndenumerate(p):
        mark = "✓" if chosen[t, l] else "·"
        ax.text(l, t, f"{mark}\n{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 else "black")
    ax.set_yticks(range(len(run["tasks"])), run["tasks"])
    ax.set_xticks(range(p.shape[1]), [str(l + 1) for l in range(p.shape[1])])
    ax.set_xlabel("block")
    ax.set_title(f"AdaShare policy (seed {run['seed']}): p(execute), ✓ = executed", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs: list[dict[str, Any]], out: Path) -> str:
    """Write ``summary.json``, ``table.md`` and one policy grid per AdaShare run into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary)
    (out / "table.md").write_text(text)
    for r in runs:
        if r["method"] == "adashare":
            plot_policy(r, out / f"policy_seed{r['seed']}.png")
    return text
