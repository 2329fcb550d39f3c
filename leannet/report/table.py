"""Markdown result tables: final-epoch accuracy mean ± std over seeds, best labelled as such."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from leannet.errors import LeannetError
from leannet.runio import epoch_metrics


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory (one holding results.json) at or below the given paths."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise LeannetError(f"no such run directory: {path}")
        found += sorted((p.parent for p in path.rglob("results.json")), key=_suite_order(path)) if path.is_dir() else []
    if not found:
        raise LeannetError(f"no finished runs (results.json) under {', '.join(map(str, paths))}")
    return found


def _suite_order(folder: Path) -> Callable[[Path], tuple]:
    """Sort key: the suite's variant order (its `suite.json`) first, then the path."""
    order_file = folder / "suite.json"
    try:
        variants = json.loads(order_file.read_text())["variants"] if order_file.is_file() else []
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        variants = []
    rank = {name: k for k, name in enumerate(variants)}

    def key(run_dir: Path) -> tuple:
        parts = run_dir.relative_to(folder).parts
        return (rank.get(parts[0], len(rank)) if parts else len(rank), run_dir.as_posix())

    return key


def load_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    try:
        return json.loads(path.read_text()) | {"run_dir": str(run_dir)}
    except (OSError, json.JSONDecodeError) as err:
        raise LeannetError(f"cannot read {path}: {err}; delete the run or re-run it") from None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(run_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """Group runs by name (the suite variant) in first-seen order and average over seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        results = load_results(Path(run_dir))
        groups.setdefault(results["name"], []).append(results)
    rows = []
    for name, runs in groups.items():
        row: dict[str, Any] = {"name": name, "seeds": len(runs), "runs": runs}
        for key in ("test_acc", "test_acc_at_best_val", "best_val_acc", "epoch_seconds", "images_per_s",
                    "test_top5"):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                row[key] = mean_std(values)
        named = [k for k in runs[0] if k.startswith("test_acc_") and k != "test_acc_at_best_val"]
        row["outputs"] = {k.removeprefix("test_acc_"): mean_std([r[k] for r in runs if r.get(k) is not None])
                          for k in named if any(r.get(k) is not None for r in runs)}
        for key in ("params", "trainable_params"):  # older result files may lack a count
            row[key] = next((r[key] for r in runs if r.get(key) is not None), None)
        row["epochs"] = runs[0].get("epochs")
        rows.append(row)
    return rows


def _pct(value: tuple[float, float] | None) -> str:
    return "–" if value is None else f"{100 * value[0]:.2f} ± {100 * value[1]:.2f}"


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table: final test accuracy first; the best-validation checkpoint is labelled."""
    lines = [
        "| run | seeds | epochs | test acc % (final) | test acc % (best-val ckpt) | best val acc % "
        "| s / epoch | train img/s | params (trainable) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sec, rate = row.get("epoch_seconds"), row.get("images_per_s")
        lines.append(
            f"| {row['name']} | {row['seeds']} | {row['epochs']} | {_pct(row.get('test_acc'))} "
            f"| {_pct(row.get('test_acc_at_best_val'))} | {_pct(row.get('best_val_acc'))} "
            f"| {f'{sec[0]:.1f}' if sec else '–'} | {f'{rate[0]:.0f}' if rate else '–'} "
            f"| {_count(row.get('params'))} ({_count(row.get('trainable_params'))}) |"
        )
    return "\n".join(lines)


def outputs_table(rows: list[dict[str, Any]]) -> str:
    """Final test accuracy of every named output (`Method.eval_logits`, e.g. BYOT exits and ensemble); "" if none."""
    lines = [
        f"| {row['name']} | {name} | {_pct(value)} |" for row in rows for name, value in row.get("outputs", {}).items()
    ]
    if not lines:
        return ""
    return "\n".join(["| run | output | test acc % (final) |", "|---|---|---|", *lines])
REPORT_SECTIONS: list[Callable[[list[Path], Path], str | None]] = []


def register_section(section: Callable[[list[Path], Path], str | None]) -> Callable[[list[Path], Path], str | None]:
    """Add an area's report section: ``section(run_dirs, out)`` returns markdown (or None to skip)."""
    REPORT_SECTIONS.append(section)
    return section


def report(paths: Iterable[str | Path], out: str | Path | None = None, title: str = "Results") -> str:
    """Aggregate runs into `report.md` and `curves.png` in `out` (default: the first path).

    Registered sections (`register_section`, e.g. spike rasters for spiking runs) are appended.
    """
    from leannet.plugins import load_plugins
    from leannet.report.plots import plot_curves

    load_plugins()  # the techniques' report sections

    paths = list(paths)
    run_dirs = find_runs(paths)
    rows = aggregate(run_dirs)
    for run_dir in run_dirs:  # a damaged metrics.csv is a one-line error before anything is written
        epoch_metrics(run_dir)
    out = Path(out) if out is not None else Path(paths[0])
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_curves(rows, out / "curves.png")
    text = (
        f"# {title}\n\nMean ± sample std over seeds. 'final' is the model after the last epoch; "
        "'best-val ckpt' is the checkpoint with the best validation accuracy.\n\n"
        f"{markdown_table(rows)}\n\n"
    )
    named = outputs_table(rows)
    if named:
        text += f"Every output of methods with several classifiers (e.g. BYOT's exits and ensemble):\n\n{named}\n\n"
    text += f"![learning curves]({plot.name})\n"
    for section in REPORT_SECTIONS:
        extra = section(list(run_dirs), out)
        if extra:
            text += f"\n{extra}\n"
    (out / "report.md").write_text(text)
    return text
