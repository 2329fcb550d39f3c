"""The default thread count follows the cores actually free for the process (issue 26)."""

import pytest

from leannet.train.threads import cgroup_cpu_quota, choose_threads, runnable_others, thread_count


@pytest.mark.parametrize("cores, quota, busy, machine, expected", [
    (2, None, 0.0, 2, 2),  # quiet 2-core machine: both cores
    (2, None, 1.0, 2, 1),  # one busy process beside us: the free core only
    (2, None, 0.4, 2, 2),  # a process busy less than half the time does not take a core
    (2, None, 0.6, 2, 1),
    (2, None, 5.0, 2, 1),  # never fewer than one thread
    (8, 1.5, 0.0, 8, 1),  # a cgroup quota of 1.5 CPUs: one whole core
    (8, 4.0, 0.0, 8, 4),
    (4, None, 8.0, 16, 2),  # 4 of 16 cores allowed: a quarter of the machine's busy threads land on ours
    (16, None, 3.0, 16, 13),
])
def test_threads_are_the_free_cores(cores, quota, busy, machine, expected):
    count, reason = choose_threads(cores, quota, busy, machine)
    assert count == expected
    assert f"{cores} cores allowed" in reason and "\n" not in reason


def test_cgroup_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None  # no cgroup v2 files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_runnable_others_is_the_median_of_samples_without_ourselves():
    texts = iter(["0.1 0.1 0.1 2/300 1\n", "0.1 0.1 0.1 3/300 1\n", "0.1 0.1 0.1 2/300 1\n"])
    assert runnable_others(lambda: next(texts), samples=3, interval=0) == 1
    assert runnable_others(lambda: "garbage", samples=3, interval=0) is None


def test_the_override_wins_and_the_reason_is_recorded(monkeypatch):
    assert thread_count(3) == (3, "trainer.threads=3 (set in the recipe)")
    monkeypatch.setattr("leannet.train.threads.machine_state", lambda: (2, None, 1.0, 2))
    monkeypatch.setattr("leannet.train.threads._chosen", None)  # chosen once per process: forget this one's
    count, reason = thread_count(None)
    assert count == 1 and reason.startswith("auto: 2 cores allowed")
