"""Run-directory I/O shared by the trainer and every technique: checkpoints and per-epoch metrics.

Below the trainer on purpose: techniques (teachers, Knowledge Evolution, reports) read and write run
directories without importing `leannet.train`.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from leannet import signals
from leannet.checksum import CHECKSUM_KEY, tensor_digest
from leannet.errors import LeannetError

TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # `.NAME.XXXXXXXX.tmp` of mkstemp below
_unverified: set[Path] = set()


class CheckpointWriteError(LeannetError):
    """A checkpoint could not be written (full or read-only disk); the file it would replace is untouched."""


def describe_os_error(err: OSError) -> str:
    """`strerror` of an OSError with a plain word for the common causes (read-only, full, permission)."""
    reasons = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
               errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}
    return reasons.get(err.errno, err.strerror or type(err).__name__)


def free_space(folder: Path) -> str:
    """'12 MiB free on /mount' for the file system holding `folder`."""
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"free space unknown on {mount}"
    return f"{free / 2**20:.0f} MiB free on {mount}"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous file intact: readers see the old or the new file, never a
    partial one. A dict gets the sha256 of its tensors under `CHECKSUM_KEY` (`safe_torch_load` checks it).
    A write that fails for lack of space (or a read-only disk) is a one-line `CheckpointWriteError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: {"sha256": tensor_digest(obj)}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with signals.deferred(), os.fdopen(fd, "wb") as f:  # Ctrl-C / SIGTERM act once the file is complete
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        reason = _write_failure(err)
        if reason is None:
            raise
        previous = "the previous checkpoint is intact" if path.is_file() else "no earlier one of that name exists"
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {reason} ({free_space(path.parent)}); "
                                   f"{previous}") from None


def _write_failure(err: BaseException) -> str | None:
    """Why a write failed, for a full or read-only disk (torch's zip writer reports it as a RuntimeError)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return describe_os_error(err)
    if isinstance(err, RuntimeError) and ("write failed" in str(err) or "unexpected pos" in str(err)):
        return "the file write failed (a full disk?)"
    return None


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)`; a missing, corrupt or foreign file is a one-line error naming it.

    A checkpoint written by `atomic_torch_save` must match the checksum of its tensors (bit flips on disk are
    an error); one without a checksum (older leannet, other programs) loads with a note on stderr."""
    path = Path(path)
    if not path.is_file():
        raise LeannetError(f"checkpoint not found: {path}; check the run directory")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeannetError(
            f"cannot read checkpoint {path} (corrupt, truncated or not a leannet checkpoint: {reason[:160]}); "
            "delete it or point to another checkpoint"
        ) from None
    recorded = data.pop(CHECKSUM_KEY, None) if isinstance(data, dict) else None
    if isinstance(recorded, dict) and recorded.get("sha256") != tensor_digest(data):
        raise LeannetError(f"checkpoint {path} is corrupt: its tensors do not match the checksum recorded when it "
                           "was written (damaged on disk or in a copy); delete it or use another checkpoint")
    if recorded is None and isinstance(data, dict) and path not in _unverified:
        _unverified.add(path)
        print(f"leannet: note: checkpoint {path} has no checksum (written by an older leannet or another program); "
              "loaded without verifying its tensors", file=sys.stderr)
    return data


def remove_orphans(run_dir: str | Path) -> list[Path]:
    """Delete temporary files that a writer killed mid-write left in a run folder (`.NAME.XXXXXXXX.tmp`).

    Only safe while the folder's `RunLock` is held: a live writer's temporary file looks the same."""
    run_dir = Path(run_dir)
    folders = [run_dir, run_dir / "checkpoints", *run_dir.glob("gen*"), *run_dir.glob("gen*/checkpoints")]
    orphans = [p for folder in folders if folder.is_dir() for p in folder.glob(".*.tmp") if TEMPORARY.match(p.name)]
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv written by `EpochMonitor` (empty cells dropped); a damaged file is one line."""
    try:
        with Path(path).open(newline="") as f:
            rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
        for row in rows:
            row["epoch"] = int(row["epoch"])
    except (ValueError, TypeError, KeyError, csv.Error) as err:
        reason = f"no {err} column" if isinstance(err, KeyError) else str(err).splitlines()[0][:120]
        raise LeannetError(f"cannot read {path} ({reason}): it is not a metrics file as leannet writes them; "
                           "restore it or delete it (the epochs it held are then missing from reports)") from None
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


def finite_json(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every NaN or infinite float as null, listed (by dotted key) under `non_finite`."""
    found: dict[str, str] = {}

    def clean(value: Any, key: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found[key] = str(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    cleaned = clean(payload, "")
    return {**cleaned, "non_finite": found} if found else cleaned


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` as indented, strict JSON (non-finite numbers become null, see `finite_json`), atomically:
    a temporary file of this writer's own, renamed over `path` (so processes writing the same file at once,
    e.g. DDP ranks, never rename each other's file away)."""
    text = json.dumps(finite_json(payload), indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
