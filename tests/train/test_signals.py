"""A terminated or interrupted `leannet train` exits non-zero and prints the command that resumes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def start_training(tmp_path: Path) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "leannet.cli", "train", str(REPO / "recipes/baseline/fashion_mnist.yaml"),
        f"out_dir={tmp_path}", "name=sig", "model.name=mlp", "data.few_shot=200", "data.val_size=100",
        "trainer.max_epochs=200", "trainer.threads=1", "trainer.progress=auto",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    # as from a terminal: a child inherits an ignored SIGINT (pytest's may be, after Lightning's DDP tests)
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.fashion
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_the_run_with_a_resume_command(tmp_path, signum, code):
    proc = start_training(tmp_path)
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until the first epoch (and its last.ckpt) is done
        if line.startswith("epoch 2/") or time.monotonic() > deadline:
            break
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    run_dir = tmp_path / "sig"
    assert proc.returncode == code, err[-2000:]
    assert f"resume with `leannet train --resume {run_dir}`" in err
    assert "Traceback" not in err
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "results.json").exists()
