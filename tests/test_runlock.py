"""One writer per run folder (issue 26): folders are claimed atomically and locked while a run trains."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leannet.cli import main as leannet_main

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.name=digits", "data.val_size=100", "data.few_shot=10", "data.batch_size=50", "model.name=mlp",
        "trainer.threads=1", "trainer.progress=none"]


def leannet(tmp_path: Path, *argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "leannet.cli", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_started_at_once_with_one_name_get_two_folders(tmp_path):
    procs = [leannet(tmp_path, "train", "fashion_mnist", *TINY, "trainer.max_epochs=1", f"out_dir={tmp_path}",
                     "name=same", f"seed={seed}") for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == ["same", "same-2"]
    seeds = set()
    for name in folders:
        config = (tmp_path / name / "config.yaml").read_text()
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert f"seed: {results['seed']}\n" in config
        seeds.add(results["seed"])
    assert seeds == {1, 2}


def test_a_second_writer_of_a_training_run_is_refused_with_its_holder(tmp_path, capfd):
    from leannet.config import load_recipe
    from leannet.errors import LeannetError
    from leannet.runlock import RunLock
    from leannet.train.run import train

    proc = leannet(tmp_path, "train", "fashion_mnist", *TINY, "trainer.max_epochs=100000", "trainer.progress=auto",
                   f"out_dir={tmp_path}", "name=busy")
    run_dir = tmp_path / "busy"
    held = f"run folder {run_dir} is in use by pid {proc.pid} on {socket.gethostname()} since "
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # once an epoch (and last.ckpt) is done, a resume has something to resume
            if line.startswith("epoch 2/") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGSTOP)  # still holding its lock, but no longer racing the checks below
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        before = (run_dir / "config.yaml").read_text()
        capfd.readouterr()
        assert leannet_main(["train", "--resume", str(run_dir), "trainer.max_epochs=3"]) == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and held in err, err
        config = load_recipe("fashion_mnist", [*TINY, "trainer.max_epochs=1", f"out_dir={tmp_path}"])
        with pytest.raises(LeannetError, match=held):  # an explicit folder, as a suite gives
            train(config, run_dir=run_dir)
        assert (run_dir / "config.yaml").read_text() == before
        # a new run with the same name is not refused: it gets its own folder
        assert leannet_main(["train", "fashion_mnist", *TINY, "trainer.max_epochs=1", f"out_dir={tmp_path}",
                             "name=busy"]) == 0
        assert (tmp_path / "busy-2" / "results.json").is_file()
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    with RunLock(run_dir):  # the OS released the lock with the process
        pass


def test_holder_of_a_lock_is_recorded_and_released(tmp_path):
    from leannet.errors import LeannetError
    from leannet.runlock import RunLock

    with RunLock(tmp_path / "run") as lock:
        lock.announce()
        holder = json.loads((tmp_path / "run" / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(LeannetError, match=f"in use by pid {os.getpid()}"):  # flock: per open file
            RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run"):
        pass
