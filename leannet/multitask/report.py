"""Comparison of multi-task runs (the ``results.json`` of ``leannet train`` / ``leannet suite`` runs): every
metric per task, Δm vs single-task, the paired Δm differences against hard sharing, parameters and
executed blocks; and the learned policy grid (blocks × tasks, execute probability) of each AdaShare run.

Runs are grouped by variant: the folder above ``seed<N>/`` in a suite's layout, else the run's name.
Runs with a single task are the single-task baseline: per seed, the single-task variants together
make one "single-task" row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from leannet.errors import LeannetError
from leannet.multitask.metrics import HIGHER_IS_BETTER, delta_m

SINGLE = "single-task"
REFERENCE = "hard"
RANDOM = "random"


def load_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Multi-task runs under ``paths``, each with ``variant``, ``seed``, ``tasks`` and ``metrics`` {task: {m: v}}."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise LeannetError(f"no such file or directory: {p}; give multi-task run folders (e.g. runs/multitask)")
        found |= {p} if p.is_file() else set(p.rglob("results.json"))
    runs = []
    for f in sorted(found):
        if f.parent.name == "search":  # AdaShare's search stage: its policy is in the run above
            continue
        try:
            run = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LeannetError(f"{f} is not valid JSON ({err}); delete it or leave its folder out") from None
        if not isinstance(run, dict) or "tasks" not in run or "policy" not in run:
            continue
        metrics: dict[str, dict[str, float]] = {t: {} for t in run["tasks"]}
        for key, value in run.items():
            m = re.fullmatch(r"test_([a-z]+)/([a-z0-9_.]+)", key)
            if m and m.group(1) in metrics and m.group(2) in HIGHER_IS_BETTER:
                metrics[m.group(1)][m.group(2)] = value
        variant = f.parent.parent.name if re.fullmatch(r"seed\d+", f.parent.name) else run.get("name", f.parent.name)
        search = f.parent / "search" / "policy.json"
        trajectory = json.loads(search.read_text()).get("p_execute_per_epoch") if search.is_file() else None
        runs.append({**run, "variant": SINGLE if len(run["tasks"]) == 1 else variant, "metrics": metrics,
                     "file": str(f), "search_trajectory": trajectory})
    if not runs:
        where = ", ".join(map(str, paths))
        raise LeannetError(f"no multi-task results under {where} ({len(found)} results.json files, none of a "
                           "multi-task run); point to runs/multitask or results/multitask/scenes")
    return runs


def _merge_single(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The single-task runs of each seed as one run over all their tasks (a seed whose single-task runs do not
    cover every task yet is left out)."""
    merged = [r for r in runs if r["variant"] != SINGLE]
    every_task = {t for r in runs if r["variant"] == SINGLE for t in r["tasks"]}
    for seed in sorted({r["seed"] for r in runs if r["variant"] == SINGLE}):
        group = [r for r in runs if r["variant"] == SINGLE and r["seed"] == seed]
        if {t for r in group for t in r["tasks"]} != every_task:
            continue
        merged.append({"variant": SINGLE, "seed": seed, "tasks": [t for r in group for t in r["tasks"]],
                       "metrics": {t: v for r in group for t, v in r["metrics"].items()},
                       "deployed_params": sum(r["deployed_params"] for r in group),
                       "executed_blocks": {t: b for r in group for t, b in r["executed_blocks"].items()},
                       "num_blocks": group[0]["num_blocks"], "train_seconds": sum(r["train_seconds"] for r in group)})
    return merged


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: mean ± std over seeds of every metric, Δm (vs the single-task mean over seeds) and its
    per-seed values, the paired difference of Δm against hard sharing, params and executed blocks; for
    searched policies, the range of p(execute) and its largest spread across tasks (max over blocks)."""
    runs = _merge_single(runs)
    single = [r for r in runs if r["variant"] == SINGLE]
    baseline = ({t: {m: float(np.mean([r["metrics"][t][m] for r in single])) for m in v}
                 for t, v in single[0]["metrics"].items()} if single else None)
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in sorted(runs, key=_order)):
        group = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
        row: dict[str, Any] = {"seeds": [r["seed"] for r in group]}
        for task, values in group[0]["metrics"].items():
            for m in values:
                row[f"{task}/{m}"] = _ms([r["metrics"][task][m] for r in group])
        if baseline is not None and all(set(r["metrics"]) <= set(baseline) for r in group):
            deltas = [delta_m(r["metrics"], baseline) for r in group]
            row["delta_m"] = _ms([d[0] for d in deltas])
            row["delta_m_per_seed"] = [float(d[0]) for d in deltas]
            row["delta_m_by_seed"] = {f"seed{r['seed']}": float(d[0]) for r, d in zip(group, deltas, strict=True)}
            for task in group[0]["metrics"]:
                row[f"delta/{task}"] = _ms([d[1][task] for d in deltas])
        row["params"] = _ms([r["deployed_params"] for r in group])
        row["avg_executed_blocks"] = _ms([float(np.mean(list(r["executed_blocks"].values()))) for r in group])
        row["executed_blocks"] = {t: _ms([float(r["executed_blocks"][t]) for r in group])
                                  for t in group[0]["executed_blocks"]}
        row["num_blocks"] = group[0]["num_blocks"]
        row["seconds"] = _ms([r["train_seconds"] for r in group])
        searched = [np.array(r["search_p_execute"]) for r in group if r.get("search_p_execute")]
        if searched:  # how far the tasks' policies moved apart: max over blocks of the spread across tasks
            row["p_execute_spread"] = _ms([float((p.max(0) - p.min(0)).max()) for p in searched])
            row["p_execute_range"] = [float(min(p.min() for p in searched)), float(max(p.max() for p in searched))]
        out[variant] = row
    for variant, row in out.items():
        for reference in (REFERENCE, SINGLE, *([RANDOM] if variant.startswith("adashare") else [])):
            if reference != variant:
                _pair(row, out.get(reference, {}), reference)
    return out


def _pair(row: dict[str, Any], reference: dict[str, Any], name: str) -> None:
    """``vs_<name>``: mean ± std over shared seeds of Δm − Δm(reference), and [better, n, equal]."""
    if "delta_m_per_seed" not in row or "delta_m_per_seed" not in reference:
        return
    ref = dict(zip(reference["seeds"], reference["delta_m_per_seed"], strict=True))
    diffs = [d - ref[s] for s, d in zip(row["seeds"], row["delta_m_per_seed"], strict=True) if s in ref]
    if diffs:
        key = "vs_" + ("single" if name == SINGLE else name)
        row[key] = _ms(diffs)
        row[key + "_wins"] = [sum(d > 0 for d in diffs), len(diffs), sum(d == 0 for d in diffs)]


def _order(run: dict[str, Any]) -> int:
    """Single-task first, then hard sharing, then the rest in the order found."""
    return {SINGLE: 0, REFERENCE: 1}.get(run["variant"], 2)


def _ms(values: list[float]) -> list[float]:
    """Mean and sample standard deviation (ddof 1, as everywhere in leannet's reports)."""
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables: one per task, then Δm / paired Δm vs hard / params / blocks."""
    variants = list(summary)
    lines = []
    metric_keys = list(dict.fromkeys(k for v in variants for k in summary[v]
                                     if "/" in k and not k.startswith("delta/")))
    tasks = list(dict.fromkeys(k.split("/")[0] for k in metric_keys))
    for task in tasks:
        keys = [k for k in metric_keys if k.startswith(task + "/")]
        heads = [f"{k.split('/')[1]} {'↑' if HIGHER_IS_BETTER[k.split('/')[1]] else '↓'}" for k in keys]
        lines += [f"**{task}** (test set, final epoch, mean ± std over seeds)", "",
                  "| variant | " + " | ".join(heads) + " |", "|---" * (len(keys) + 1) + "|"]
        for v in variants:
            if any(k in summary[v] for k in keys):
                cells = [_fmt(summary[v][k], k.split("/")[1]) if k in summary[v] else "–" for k in keys]
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    pairs = [("hard", "vs_hard"), ("single-task", "vs_single"), ("random", "vs_random")]
    lines += ["| variant | Δm % ↑ | " + " | ".join(f"Δm − Δm({name}), paired" for name, _ in pairs) + " | "
              + " | ".join(f"Δ {t} %" for t in tasks)
              + " | params | executed blocks per task | p(execute): range, spread across tasks | train s | seeds |",
              "|---" * (len(tasks) + len(pairs) + 7) + "|"]
    for v in variants:
        row = summary[v]
        deltas = [_pm(row[f"delta/{t}"], 2) if f"delta/{t}" in row else "–" for t in tasks]
        paired = [_paired_cell(row, key) for _, key in pairs]
        executed = row.get("executed_blocks", {})
        blocks = ", ".join(f"{executed[t][0]:.1f}" if t in executed else "–" for t in tasks) if executed else "–"
        lines.append(f"| {v} | {_pm(row['delta_m'], 2) if 'delta_m' in row else '–'} | " + " | ".join(paired) + " | "
                     + " | ".join(deltas)
                     + f" | {row['params'][0]:,.0f} | {blocks} of {row['num_blocks']}"
                     + f" | {_policy_cell(row)} | {row['seconds'][0]:.0f} | {', '.join(map(str, row['seeds']))} |")
    order = ", ".join(tasks)
    lines += ["", f"Executed blocks per task in the order {order}; paired columns: mean ± std over shared seeds "
              "of the per-seed difference, and how many seeds favour the row."]
    return "\n".join(lines) + "\n"


def _paired_cell(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "–"
    better, n, ties = row[key + "_wins"]
    return f"{_pm(row[key], 2)} ({better}/{n} better" + (f", {ties} equal)" if ties else ")")


def _policy_cell(row: dict[str, Any]) -> str:
    if "p_execute_spread" not in row:
        return "–"
    low, high = row["p_execute_range"]
    return f"{low:.2f}–{high:.2f}, {_pm(row['p_execute_spread'], 3)}"


def _fmt(ms: list[float], metric: str) -> str:
    percent = metric in ("miou", "pixel_acc", "delta1") or metric.startswith("within")
    return _pm([v * 100 for v in ms], 2) if percent else _pm(ms, 3 if "err" in metric else 2)


def _pm(ms: list[float], digits: int) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def plot_policy(run: dict[str, Any], path: Path) -> Path:
    """The learned policy grid of an AdaShare run: tasks × blocks, colour = p(execute) at the end of the
    search, ✓ = executed by the chosen discrete policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.array(run["search_p_execute"])
    chosen = np.array(run["policy"])
    fig, ax = plt.subplots(figsize=(0.55 * p.shape[1] + 3, 0.55 * p.shape[0] + 1.4))
    im = ax.imshow(p, cmap="Blues", vmin=0, vmax=1)
    for (t, l), value in np.ndenumerate(p):
        mark = "✓" if chosen[t, l] else "·"
        ax.text(l, t, f"{mark}\n{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 else "black")
    ax.set_yticks(range(len(run["tasks"])), run["tasks"])
    ax.set_xticks(range(p.shape[1]), [str(l + 1) for l in range(p.shape[1])])
    ax.set_xlabel("block")
    ax.set_title(f"{run['variant']}, seed {run['seed']}\np(execute) after the search, ✓ = executed", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_search(run: dict[str, Any], path: Path) -> Path:
    """p(execute) of every block after each policy epoch of the search, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.array(run["search_trajectory"])  # [epoch, task, block]
    fig, axes = plt.subplots(1, p.shape[1], figsize=(3.2 * p.shape[1], 2.8), sharey=True, squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 1, p.shape[2]))
    for t, ax in enumerate(axes[0]):
        for l in range(p.shape[2]):
            ax.plot(range(1, p.shape[0] + 1), p[:, t, l], color=colours[l], lw=1, label=f"block {l + 1}")
        ax.set(title=run["tasks"][t], xlabel="search epoch", ylim=(0, 1))
    axes[0][0].set_ylabel("p(execute)")
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{run['variant']}, seed {run['seed']}: the policy during the search", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs: list[dict[str, Any]], out: Path) -> str:
    """Write ``summary.json``, ``table.md`` and one policy grid per searched run (``policy_<variant>_seed<N>.png``)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(summary)
    (out / "table.md").write_text(text)
    for r in runs:
        if r.get("search_p_execute"):
            plot_policy(r, out / f"policy_{r['variant']}_seed{r['seed']}.png")
        if r.get("search_trajectory"):
            plot_search(r, out / f"search_{r['variant']}_seed{r['seed']}.png")
    return text
