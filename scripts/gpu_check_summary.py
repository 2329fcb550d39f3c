"""Summarise scripts/gpu_check.sh's runs as markdown: the CUDA tests' counts, the GPU benchmark ratios,
TSSL-BP final vs best test epoch next to the paper, and the KD family's per-variant test accuracy with the
paired difference to the baseline. Any part not run (yet) says so: it also summarises a run cut off early.

    python scripts/gpu_check_summary.py runs/gpu_check runs/distill_fewshot100 [--json results/spiking/gpu_check.json]
        [--tests runs/gpu_check/logs/cuda_tests.xml] [--bench runs/gpu_check/gpu.json]

`--json` also writes the TSSL-BP numbers ({run: {epochs, final, best, best_epoch}}), which REPRODUCTION.md reads.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from leannet.report.repro import effect, format_mean_std
from leannet.train.callbacks import read_metrics

PAPER = {"cnn_tssl": "92.69 ± 0.09 %, best 92.83 % (100 epochs)", "mlp_tssl": "89.75 ± 0.03 % (100 epochs)"}


def spiking_numbers(root: Path) -> dict[str, dict[str, float]]:
    """Per TSSL-BP run: epochs done, final and best test accuracy (val/acc is the test set: data.val_on_test)."""
    numbers = {}
    for name in PAPER:
        path = root / name / "metrics.csv"
        accs = [r["val/acc"] for r in read_metrics(path) if "val/acc" in r] if path.is_file() else []
        if accs:
            best = max(range(len(accs)), key=accs.__getitem__)
            numbers[name] = {"epochs": len(accs), "final": accs[-1], "best": accs[best], "best_epoch": best + 1}
    return numbers


def spiking_rows(numbers: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| run | epochs done | final test acc | best test epoch (paper's protocol) | paper |",
             "|---|---|---|---|---|"]
    for name, paper in PAPER.items():
        n = numbers.get(name)
        if n is None:
            lines.append(f"| {name} | 0 | – | – | {paper} |")
        else:
            lines.append(f"| {name} | {n['epochs']} | {100 * n['final']:.2f} % | {100 * n['best']:.2f} % "
                         f"(epoch {n['best_epoch']}) | {paper} |")
    return lines


def suite_rows(root: Path) -> list[str]:
    results: dict[str, dict[int, float]] = {}
    for path in sorted(root.glob("*/seed*/results.json")):
        data = json.loads(path.read_text())
        results.setdefault(path.parent.parent.name, {})[data["seed"]] = data["test_acc"]
    base = results.get("baseline", {})
    lines = ["| variant | n | final test acc | paired Δ vs baseline |", "|---|---|---|---|"]
    for variant, by_seed in results.items():
        seeds = sorted(set(by_seed) & set(base))
        size = effect([by_seed[s] for s in seeds], [base[s] for s in seeds], ">", True, 100.0, 2, " %") \
            if variant != "baseline" and seeds else "–"
        lines.append(f"| {variant} | {len(by_seed)} | {format_mean_std(list(by_seed.values()), 100.0)} % | {size} |")
    return lines


def test_rows(junit: Path | None) -> list[str]:
    """Counts of pytest's JUnit XML (tests, failures, errors, skipped, seconds) and the failing tests' names."""
    if junit is None or not junit.is_file():
        return ["no JUnit file: not run, or cut off by its budget (logs/cuda_tests.log in gpu_check.tar.gz)"]
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return ["still running or cut off (incomplete JUnit file)"]
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    lines = [f"{n['tests']} tests: {passed} passed, {n['failures']} failed, {n['errors']} errors, "
             f"{n['skipped']} skipped in {float(suite.get('time', 0)):.0f} s"]
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            message = (bad.get("message") or "").strip().splitlines()
            lines.append(f"- {case.get('name')}: {message[0][:200] if message else ''}")
    return lines


def bench_rows(path: Path | None) -> list[str]:
    """benchmarks/gpu.py's ratios (b / a per step or images/s), one line each; the ones not finished say so."""
    if path is None or not path.is_file():
        return ["not run"]
    data = json.loads(path.read_text())
    smoke = " (SMOKE: sizes too small to mean anything)" if data.get("smoke") else ""
    note = f"; {data['note']}" if data.get("note") else ""
    lines = [f"{data.get('device')}, torch {data.get('torch')}{smoke}{note}", "", "| benchmark | ratio | rounds |",
             "|---|---|---|"]
    for name in ("trainer", "rbn", "byot", "spiking", "loader"):
        b = data.get(name)
        if b is None:
            lines.append(f"| {name} | not finished | – |")
            continue
        ratio = b.get("ratio_median", b.get("speedup_vs_torch_best"))
        what = f"{b['b']} / {b['a']}" if "a" in b else \
            ("leannet / plain" if name == "trainer" else "TensorLoader / DataLoader")
        rounds = ", ".join(f"{r:.2f}" for r in b.get("ratios", [])) or "–"
        lines.append(f"| {name} ({what}) | {ratio:.3f} | {rounds} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spiking_runs", type=Path)
    parser.add_argument("kd_runs", type=Path)
    parser.add_argument("--json", type=Path, help="also write the TSSL-BP numbers here")
    parser.add_argument("--tests", type=Path, help="the CUDA tests' JUnit XML")
    parser.add_argument("--bench", type=Path, help="benchmarks/gpu.py's JSON")
    args = parser.parse_args()
    numbers = spiking_numbers(args.spiking_runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    print("\n".join(["## CUDA tests", ""] + test_rows(args.tests) + ["", "## GPU benchmarks", ""]
                    + bench_rows(args.bench) + ["", "## TSSL-BP, all 60,000 training images", ""]
                    + spiking_rows(numbers)
                    + ["", "## KD family, few-shot suite", ""] + suite_rows(args.kd_runs)))


if __name__ == "__main__":
    main()
