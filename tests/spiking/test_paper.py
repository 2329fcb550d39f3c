"""TSSL-BP paper table (leannet.spiking.paper): per-run final / best-test-epoch numbers, the comparison with the
paper, and the report over the real suites at tiny scale (finished and partial runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from leannet.spiking.paper import PAPER, compare, curve_gap, run_summary

REPO = Path(__file__).resolve().parents[2]


def write_run(folder: Path, curve: list[float], finished: bool, val_on_test: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,step,val/acc"] + [f"{e},{10 * (e + 1)},{acc}" for e, acc in enumerate(curve)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    (folder / "config.yaml").write_text(f"data: {{val_on_test: {str(val_on_test).lower()}}}\n")
    if finished:
        (folder / "results.json").write_text(json.dumps({"test_acc": curve[-1], "train_seconds": 5.0}))
    return folder


def test_run_summary_final_and_best_epoch(tmp_path):
    run = run_summary(write_run(tmp_path / "a", [0.80, 0.88, 0.90, 0.89], finished=True), 4)
    assert run["finished"] and run["epochs"] == 4 and run["final"] == 0.89
    assert run["best"] == 0.90 and run["best_epoch"] == 3 and run["val_is_test"] is True
    partial = run_summary(write_run(tmp_path / "b", [0.7, 0.75], finished=False), 100)
    assert not partial["finished"] and partial["epochs"] == 2 and partial["planned_epochs"] == 100
    assert run_summary(tmp_path / "missing") is None


def test_compare_with_the_paper_hand_computed():
    paper = {"mean": 0.8975, "std": 0.0003}
    # mean 0.8960, sample std 0.001 over 3 seeds: SE = sqrt(0.001²/3 + 0.0003²) = 0.000656; −0.0015 < −2 SE
    below = compare([0.895, 0.896, 0.897], paper)
    assert below["mean"] == pytest.approx(0.896) and below["std"] == pytest.approx(0.001)
    assert below["se"] == pytest.approx(math.sqrt(0.001**2 / 3 + 0.0003**2))
    assert below["minus_paper"] == pytest.approx(-0.0015) and below["verdict"] == "below the paper"
    assert compare([0.897, 0.898, 0.8985], paper)["verdict"] == "matches the paper"
    assert compare([0.905, 0.906, 0.907], paper)["verdict"] == "above the paper"
    assert compare([0.9], paper)["verdict"].startswith("one seed")
    assert compare([], paper) == {"n": 0, "verdict": "not run yet"}
    assert PAPER["mlp"]["mean"] == 0.8975 and PAPER["cnn"]["best"] == 0.9283  # papers/tsslbp.md


def test_report_over_the_suites_tiny(tmp_path, monkeypatch):
    """The real MLP suite at tiny scale (2 epochs, 2 seeds, both rules), one run left unfinished, and a fake
    partial CNN run: published, then the report counts finished runs only and labels the partial ones."""
    from leannet.train.suite import run_suite

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    monkeypatch.chdir(tmp_path)
    mlp = REPO / "recipes" / "spiking" / "suite_paper_mlp.yaml"
    overrides = ["data.name=digits", "data.few_shot=10", "trainer.max_epochs=2", "trainer.threads=1",
                 "trainer.progress=none"]
    run_suite(mlp, overrides, seeds=[0, 1])
    (tmp_path / "runs/spiking/paper_mlp/surrogate_bptt/seed1/results.json").unlink()  # as if still running
    from leannet.train.suite import publish_suite

    publish_suite(mlp, overrides)
    write_run(tmp_path / "runs/spiking/paper_cnn/tssl/seed0", [0.85, 0.88, 0.87], finished=False)
    from leannet.spiking.paper import markdown, plot_curves, summarise

    summary = summarise({"mlp": mlp, "cnn": REPO / "recipes/spiking/suite_paper_cnn.yaml"}, True, {"mlp": overrides})
    tssl = summary["mlp"]["variants"]["tssl"]
    assert tssl["finished_seeds"] == [0, 1] and tssl["final"]["n"] == 2
    published = {s: json.loads((tmp_path / f"results/spiking/paper_mlp/tssl/seed{s}/results.json").read_text())
                 for s in (0, 1)}
    assert tssl["final"]["mean"] == pytest.approx((published[0]["test_acc"] + published[1]["test_acc"]) / 2)
    # best test epoch = the run's test_acc_at_best_val (best.ckpt monitors val/acc, which is the test set here)
    assert [r["best"] for r in tssl["runs"]] == pytest.approx([published[s]["test_acc_at_best_val"] for s in (0, 1)])
    surrogate = summary["mlp"]["variants"]["surrogate_bptt"]
    assert surrogate["finished_seeds"] == [0] and surrogate["partial"][0]["epochs"] == 2
    cnn = summary["cnn"]["variants"]["tssl"]
    assert cnn["partial"] == [{"seed": 0, "epochs": 3, "planned_epochs": 100, "final": 0.87, "best": 0.88,
                               "best_epoch": 2}]
    # the partial runs' curves were copied beside the published runs (no results.json: they stay partial)
    copied = tmp_path / "results/spiking/paper_cnn/tssl/seed0"
    assert (copied / "metrics.csv").is_file() and not (copied / "results.json").exists()
    text = markdown(summary)
    assert "seed 0: partial, 3 of 100 epochs: test 87.00 % after epoch 3, best 88.00 % (epoch 2)" in text
    assert "| MLP 400-400-10 | tssl | best test epoch (paper's) | 2 |" in text
    assert plot_curves(summary, tmp_path / "curves.png").stat().st_size > 10_000
    import spiking_paper_report

    assert spiking_paper_report.main(["--out", "out"]) == 0  # the shipped suites by name, read from this folder
    written = json.loads((tmp_path / "out/summary.json").read_text())
    assert written["mlp"]["variants"]["tssl"]["final"] == summary["mlp"]["variants"]["tssl"]["final"]
    assert "partial, 3 of 100 epochs" in (tmp_path / "out/summary.md").read_text()
    assert (tmp_path / "out/test_curves.png").is_file()


def test_curve_gap_over_shared_epochs(tmp_path):
    a = write_run(tmp_path / "a", [0.80, 0.85, 0.90], finished=False)
    b = write_run(tmp_path / "b", [0.81, 0.83], finished=False)
    gap = curve_gap(a, b)
    assert gap["epochs"] == 2 and math.isclose(gap["max_abs"], 0.02) and math.isclose(gap["mean_abs"], 0.015)
    assert curve_gap(a, tmp_path / "missing") is None
