"""The GPU check's pieces on the CPU: benchmarks/gpu.py in its smoke mode, the summary of a cut-off run,
and scripts/gpu_check.sh's syntax. (`SMOKE=1 bash scripts/gpu_check.sh run` rehearses the whole check.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_gpu_benchmark_smoke_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = run("benchmarks/gpu.py", "--device", "cpu", "--smoke", "--only", "rbn", "spiking", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["smoke"] and data["complete"] and data["finished"] == ["rbn", "spiking"]
    assert data["rbn"]["ratio_median"] > 0 and len(data["spiking"]["ratios"]) == 2
    real = REPO / "benchmarks" / "results" / "gpu.json"  # only a CUDA run writes the real file
    assert not real.exists() or not json.loads(real.read_text())["smoke"]


def test_summary_of_a_cut_off_run(tmp_path):
    junit = tmp_path / "tests.xml"
    junit.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="12.5">'
                     '<testcase name="test_a"/><testcase name="test_b"><failure message="boom\nmore"/></testcase>'
                     '<testcase name="test_c"><skipped/></testcase></testsuite></testsuites>')
    bench = tmp_path / "gpu.json"
    bench.write_text(json.dumps({"device": "NVIDIA H200", "torch": "2.11", "smoke": False,
                                 "rbn": {"a": "bn", "b": "rbn", "ratio_median": 1.05, "ratios": [1.0, 1.1]}}))
    suite = tmp_path / "suite"
    for variant, seed, acc in (("baseline", 0, 0.80), ("baseline", 1, 0.82), ("kd", 0, 0.83)):
        (suite / variant / f"seed{seed}").mkdir(parents=True)
        (suite / variant / f"seed{seed}" / "results.json").write_text(json.dumps({"seed": seed, "test_acc": acc}))
    result = run("scripts/gpu_check_summary.py", str(tmp_path / "none"), str(suite),
                 "--tests", str(junit), "--bench", str(bench), "--json", str(tmp_path / "check.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "3 tests: 1 passed, 1 failed, 0 errors, 1 skipped in 12 s" in text and "- test_b: boom" in text
    assert "| rbn (rbn / bn) | 1.050 | 1.00, 1.10 |" in text and "| trainer | not finished | – |" in text
    assert "| cnn_tssl | 0 | – | – |" in text
    assert "| baseline | 2 | 81.00 ± 1.41 % | – |" in text  # a single run shows its value alone, not ± 0.00
    assert "| kd | 1 | 83.00 % | +3.00 % (paired; 1/1 favour; sign p 1) |" in text
    assert json.loads((tmp_path / "check.json").read_text()) == {}
    partial = run("scripts/gpu_check_summary.py", str(tmp_path), str(tmp_path), "--tests", str(tmp_path / "no.xml"))
    assert "no JUnit file: not run, or cut off" in partial.stdout and "## GPU benchmarks\n\nnot run" in partial.stdout


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")]).returncode == 0
    usage = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: bash scripts/gpu_check.sh prepare|run" in usage.stderr
