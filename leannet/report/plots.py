"""Learning-curve plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _curve(runs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    from leannet.runio import epoch_metrics

    series = [[row[key] for row in epoch_metrics(Path(r["run_dir"])) if key in row] for r in runs]
    series = [s for s in series if s]
    if not series:
        return None
    n = min(map(len, series))
    values = np.array([s[:n] for s in series])
    return np.arange(1, n + 1), values.mean(axis=0), values.std(axis=0)


def plot_curves(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and validation error per epoch, mean over seeds with a ±std band."""
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("train/loss", "training loss", False), ("val/acc", "validation error %", True))
    for ax, (key, label, as_error) in zip(axes, panels, strict=True):
        for row in rows:
            curve = _curve(row["runs"], key)
            if curve is None:
                continue
            x, mean, std = curve
            if as_error:
                mean, std = 100 * (1 - mean), 100 * std
            ax.plot(x, mean, label=row["name"])
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
