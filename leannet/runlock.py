"""One writer per run folder: folders are claimed atomically and locked while a run writes them.

`claim_run_dir` creates `out_dir/name` (or the first free `name-2`, `name-3` …) with `mkdir`, which
fails when the folder exists, so two runs started at once never share one. `RunLock` holds an
exclusive `flock` on `RUN/.lock` while a run trains; the OS releases it when the process ends, even
on a crash or `kill -9`, so a stale lock never blocks a resume. A second writer (a train into the
same folder, a resume, a suite) gets one line naming the holder (pid, host, start time) that the
holder wrote into the lock file. `flock` is advisory and per machine: two hosts writing one network
folder are not detected where the file system does not forward it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from leannet.errors import LeannetError

LOCK_NAME = ".lock"


def claim_run_dir(base: str | Path) -> Path:
    """Create and return `base`, or `base-2`, `base-3` … (the first that does not exist yet), atomically."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    run_dir, k = base, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            k += 1
            run_dir = base.with_name(f"{base.name}-{k}")


def first_missing(path: str | Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: `path` exists): what a run would create."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def remove_unused(run_dir: Path, top: Path) -> None:
    """Remove `run_dir` when it holds nothing but its lock file, and its parents up to `top` while empty."""
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {LOCK_NAME}:
        return
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
    folder, top = run_dir.absolute(), top.absolute()
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty: another run's folder is in it
            return
        if folder == top or folder.parent == folder:
            return
        folder = folder.parent


def is_rank_zero() -> bool:
    """Whether this process is the first of a distributed run (or not distributed): the one that locks."""
    return all(int(os.environ.get(key) or 0) == 0 for key in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class RunLock:
    """An exclusive lock on a run folder (created if missing) for as long as this process trains it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock without waiting; a folder held by another process is a one-line error naming it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise LeannetError(f"run folder {self.run_dir} is in use by {describe_holder(holder)}; wait until it "
                               "ends (or stop it), or train into another folder") from None
        self.fd = fd
        return self

    def announce(self) -> None:
        """Record this process as the holder (pid, host, start time, command) for a second writer's message.

        Separate from `acquire` so that a resume refused by a later check leaves the folder untouched."""
        if self.fd is None:
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "command": sys.argv}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(holder) + "\n").encode(), 0)

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would let a waiting writer lock a stale inode)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def describe_holder(text: str) -> str:
    """'pid 123 on HOST since 2026-… UTC' from a lock file's contents (or why it names no process)."""
    try:
        holder = json.loads(text)
        return f"pid {int(holder['pid'])} on {holder['host']} since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not recorded itself yet: it is starting)"
