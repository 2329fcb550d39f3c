"""Teacher sweep (leannet.distill.sweep): the entropy and pairing math, and the whole machinery at tiny scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from leannet.distill.sweep import paired_gains, point_label, soft_target_entropy

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "recipes" / "distill" / "suite_teacher_sweep.yaml"


def test_soft_target_entropy_hand_computed():
    # uniform logits: ln K at any T
    assert soft_target_entropy(torch.zeros(3, 10), 4.0) == pytest.approx(math.log(10))
    # logits (ln 3, 0) at T 1: p = (3/4, 1/4), H = −(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335...
    two = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    assert soft_target_entropy(two, 1.0) == pytest.approx(0.5623351446, abs=1e-9)
    # the same logits at T 2 are (ln √3, 0): p = (√3/(1+√3), 1/(1+√3))
    p = math.sqrt(3) / (1 + math.sqrt(3))
    assert soft_target_entropy(two, 2.0) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-9)
    # the mean over the batch: rows (ln 3, 0) and (0, 0) -> (0.562335 + ln 2) / 2
    batch = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert soft_target_entropy(batch) == pytest.approx((0.5623351446 + math.log(2)) / 2, abs=1e-9)
    with pytest.raises(Exception, match="temperature must be > 0"):
        soft_target_entropy(two, 0.0)


def test_paired_gains_pair_by_seed():
    student = {0: 0.80, 1: 0.83, 2: 0.79, 4: 0.90}  # seed 4 has no baseline, seed 3 no student
    baseline = {0: 0.78, 1: 0.84, 2: 0.76, 3: 0.70}
    gains = paired_gains(student, baseline)
    assert gains["seeds"] == [0, 1, 2] and gains["n"] == 3 and gains["wins"] == 2
    assert gains["per_seed"] == pytest.approx([0.02, -0.01, 0.03])
    assert gains["mean"] == pytest.approx(0.04 / 3)
    # sample std of (0.02, −0.01, 0.03): deviations (0.00667, −0.02333, 0.01667), sum of squares 0.00086667 / 2
    assert gains["std"] == pytest.approx(math.sqrt(0.0008666667 / 2), rel=1e-6)
    assert paired_gains({0: 0.5}, {1: 0.5})["n"] == 0


def test_point_labels():
    assert point_label({"name": "resnet20", "width": 1.0}, "epoch5", 40) == "ResNet-20, epoch 5"
    assert point_label({"name": "resnet20", "width": 1.0}, "epoch40", 40) == "ResNet-20"
    assert point_label({"name": "resnet8", "width": 0.25}, "last", 40) == "ResNet-8 ×0.25"


def test_sweep_suite_lists_teachers_before_their_students():
    from leannet.distill.sweep import students
    from leannet.train.suite import load_suite

    suite, runs = load_suite(SUITE)
    order = list(suite.variants)
    sweep = students(runs)
    assert len(sweep) == 22 and {s.temperature for s in sweep} == {4.0, 20.0}
    settings = {s.variant: s.setting for s in sweep}
    assert settings["dekd_ep1_t20"] == "α 0.95, T 20, official m 1"  # the official KL ÷ K: m 0.1 on batch-mean
    assert settings["dekd_ep1_t20_m1"] == "α 0.95, T 20, m 1" and settings["dekd_ep1_t4"] == "α 0.9, T 4, m 1"
    assert {s.teacher_bn for s in sweep} == {"recompute"}
    for student in sweep:  # every teacher is trained by the suite, earlier in its order
        assert order.index(student.teacher_variant) < order.index(student.variant)
    assert {s.checkpoint for s in sweep if s.teacher_variant == "teacher_resnet20"} == {
        f"epoch{e}" for e in (1, 2, 5, 10, 20, 40)}
    saved = next(r for r in runs if r.variant == "teacher_resnet20").config.trainer.save_epochs
    assert list(saved) == [1, 2, 5, 10, 20, 40]
    fewshot = load_suite(REPO / "recipes" / "distill" / "suite_fewshot100.yaml")[1][0].config
    base = next(r for r in runs if r.variant == "baseline").config
    assert (base.data, base.optim, base.trainer.max_epochs, base.model) == (
        fewshot.data, fewshot.optim, fewshot.trainer.max_epochs, fewshot.model)


def test_sweep_end_to_end_tiny(tmp_path, monkeypatch):
    """The real suite file at tiny scale (digits, 10 images per class, 2 epochs, 2 seeds, teachers + 2 students),
    published, then the report: teachers.json, paired gains, table and plot."""
    from leannet.train.suite import publish_suite, run_suite

    sys_path = REPO / "scripts"
    monkeypatch.syspath_prepend(str(sys_path))
    monkeypatch.chdir(tmp_path)  # the suite's out_dir, results_dir and teacher paths are relative
    overrides = ["data.name=digits", "data.few_shot=10", "data.val_size=100", "trainer.max_epochs=2",
                 "trainer.save_epochs=[1,2]", "trainer.threads=1", "trainer.progress=none"]
    run_suite(SUITE, overrides, seeds=[0, 1], variants=["baseline", "teacher_resnet20", "dekd_ep1_t4", "dekd_ep2_t20"])
    publish_suite(SUITE, overrides)
    import teacher_sweep_report

    assert teacher_sweep_report.main([str(SUITE), *overrides]) == 0
    out = tmp_path / "results" / "distill" / "teacher_sweep"
    teachers = json.loads((out / "teachers.json").read_text())
    point = teachers["points"]["teacher_resnet20:epoch1:recompute"]
    assert sorted(point["seeds"]) == ["0", "1"] and point["label"] == "ResNet-20, epoch 1"
    seed0 = point["seeds"]["0"]
    assert 0 <= seed0["test_acc"] <= 1 and 0 < seed0["entropy"]["20"] <= math.log(10) + 1e-9
    assert seed0["entropy"]["20"] >= seed0["entropy"]["4"] >= seed0["entropy"]["1"]  # hotter is flatter here
    # the student's own record of its teacher (fit_start, the same BN re-estimation) agrees with ours
    student = json.loads((out / "dekd_ep1_t4" / "seed0" / "results.json").read_text())
    assert student["teacher_train_acc"] == pytest.approx(seed0["fit_start"]["teacher_train_acc"])
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["variant"]: r for r in summary["rows"]}
    base = {s: json.loads((out / "baseline" / f"seed{s}" / "results.json").read_text())["test_acc"] for s in (0, 1)}
    got = {s: json.loads((out / "dekd_ep1_t4" / f"seed{s}" / "results.json").read_text())["test_acc"] for s in (0, 1)}
    assert rows["dekd_ep1_t4"]["gain"]["per_seed"] == pytest.approx([got[0] - base[0], got[1] - base[1]])
    assert rows["dekd_ep1_t4"]["family"] == "quality" and rows["dekd_ep5_t4"]["gain"]["n"] == 0
    table = (out / "table.md").read_text()
    assert "| ResNet-20, epoch 1 | α 0.9, T 4, m 1 |" in table and "not run yet" in table
    assert (out / "gain_vs_teacher.png").stat().st_size > 10_000
