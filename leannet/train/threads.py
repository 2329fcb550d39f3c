"""The default number of compute threads: the cores actually free for this process when a run starts.

Rule (used when `trainer.threads` is unset; `trainer.threads=N` overrides it):

    allowed = the CPUs this process may run on (os.sched_getaffinity), capped by the cgroup's
              CPU quota (cpu.max: quota / period, rounded down, at least 1)
    busy    = other runnable threads right now: the median of 5 samples, 20 ms apart, of the
              running count in /proc/loadavg minus this process's sampling thread (the 1-minute
              load average where /proc/loadavg is missing); when the process may use only part of
              the machine, scaled by allowed / all cores (the busy threads spread over all of them)
    threads = max(1, allowed − round(busy))

Why: on a 2-core machine with one busy process beside the run, 2 threads train a ResNet-8 at 827
images/s and 1 thread at 1,384: threads that wait for a core held by another process stall every
parallel region. An instantaneous count is used rather than the 1-minute load average alone because
that average lags: a job started seconds earlier barely shows in it. The choice is made once per
process (a suite's runs, and a run and its resume in one process, keep one thread count) and is
recorded with its reason in env.json.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
_chosen: tuple[int, str] | None = None


def choose_threads(cores: int, quota: float | None, busy: float, machine: int) -> tuple[int, str]:
    """The rule above on given values: `cores` allowed by affinity, cgroup `quota` in CPUs (None: none),
    `busy` runnable threads of other processes on the `machine`'s cores; returns (threads, reason)."""
    allowed = max(1, min(cores, math.floor(quota))) if quota is not None else max(1, cores)
    share = busy * allowed / machine if machine > allowed else busy
    threads = max(1, allowed - round(share))
    quota_text = f", cgroup quota {quota:g} CPUs" if quota is not None else ""
    return threads, (f"{cores} cores allowed{quota_text}, {share:.1f} busy with other processes: "
                     f"{threads} thread{'s' if threads > 1 else ''}")


def cgroup_cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs of the cgroup v2 `cpu.max` quota in `root` (None: no quota, no cgroup v2, unreadable)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _read_loadavg() -> str:
    return Path("/proc/loadavg").read_text()


def runnable_others(read: Callable[[], str] = _read_loadavg, samples: int = 5,
                    interval: float = 0.02) -> float | None:
    """Median over `samples` of the runnable threads in /proc/loadavg, less the one reading it (None: unknown)."""
    counts = []
    for k in range(samples):
        try:
            counts.append(int(read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if k + 1 < samples:
            time.sleep(interval)
    return max(0.0, statistics.median(counts))


def machine_state() -> tuple[int, float | None, float, int]:
    """(cores allowed by affinity, cgroup quota in CPUs, busy threads of others, cores of the machine)."""
    machine = os.cpu_count() or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine
    busy = runnable_others()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores, cgroup_cpu_quota(), busy, machine


def thread_count(configured: int | None) -> tuple[int, str]:
    """`trainer.threads` when set, else the rule on this machine now (chosen once per process), with the reason."""
    global _chosen
    if configured:
        return int(configured), f"trainer.threads={configured} (set in the recipe)"
    if _chosen is None:
        count, reason = choose_threads(*machine_state())
        _chosen = count, f"auto: {reason} (trainer.threads=N overrides)"
    return _chosen
