"""Run-directory I/O shared by the trainer and every technique: checkpoints and per-epoch metrics.

Below the trainer on purpose: techniques (teachers, Knowledge Evolution, reports) read and write run
directories without importing `leannet.train`.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from leannet import signals
from leannet.errors import LeannetError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous file intact: readers see the old or the new file, never a
    partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with signals.deferred(), os.fdopen(fd, "wb") as f:  # Ctrl-C / SIGTERM act once the file is complete
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)`; a missing, corrupt or foreign file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise LeannetError(f"checkpoint not found: {path}; check the run directory")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeannetError(
            f"cannot read checkpoint {path} (corrupt, truncated or not a leannet checkpoint: {reason[:160]}); "
            "delete it or point to another checkpoint"
        ) from None


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv written by `EpochMonitor` (empty cells dropped)."""
    with Path(path).open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    keys = ["epoch", "step"] + sorted({k for row in rows for k in row} - {"epoch", "step"})
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def epoch_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """Per-epoch rows of a run's metrics.csv (empty when it has none yet)."""
    path = Path(run_dir) / "metrics.csv"
    return read_metrics(path) if path.is_file() else []


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` as indented JSON, atomically: a temporary file of this writer's own, renamed over `path`
    (so processes writing the same file at once, e.g. DDP ranks, never rename each other's file away)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
