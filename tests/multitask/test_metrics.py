import math

import pytest
import torch

from leannet.multitask.metrics import (
    AutoencodingMetric,
    DepthMetric,
    EdgeMetric,
    NormalsMetric,
    SegmentationMetric,
    delta_m,
    segmentation_scores,
)


def test_segmentation_scores_hand_computed():
    # target rows, prediction columns: class 0: 3 right 1 wrong; class 1: 2 right
    confusion = torch.tensor([[3, 1], [0, 2]])
    s = segmentation_scores(confusion)
    assert s["pixel_acc"] == pytest.approx(5 / 6)
    assert s["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    m = SegmentationMetric(3)
    pred = torch.zeros(1, 3, 1, 4)
    pred[0, 0, 0, :2] = 1
    pred[0, 1, 0, 2:] = 1
    m.update(pred, torch.tensor([[[0, 1, 1, -1]]]))
    assert m.compute()["pixel_acc"] == pytest.approx(2 / 3)


def test_depth_metric():
    m = DepthMetric()
    m.update(torch.tensor([[[[1.0, 2.0, 5.0]]]]), torch.tensor([[[1.0, 4.0, 0.0]]]))  # last pixel invalid
    s = m.compute()
    assert s["abs_err"] == pytest.approx(1.0) and s["rel_err"] == pytest.approx(0.25)
    assert s["delta1"] == pytest.approx(0.5)


def test_normals_metric():
    m = NormalsMetric()
    target = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 1, 3).clone()
    pred = target.clone()
    pred[0, :, 0, 1] = torch.tensor([1.0, 0.0, 1.0])   # 45°
    pred[0, :, 0, 2] = torch.tensor([1.0, 0.0, 0.0])   # 90°
    m.update(pred * 3, target)  # scale does not matter
    s = m.compute()
    assert s["mean_angle"] == pytest.approx(45.0, abs=1e-4) and s["median_angle"] == pytest.approx(45.0, abs=1e-4)
    assert s["within_11.25"] == pytest.approx(1 / 3) and s["within_30"] == pytest.approx(1 / 3)


def test_edge_metric():
    m = EdgeMetric()
    m.update(torch.tensor([[[[100.0, -100.0]]]]), torch.tensor([[[1, 1]]]))
    assert m.compute()["edge_err"] == pytest.approx(0.5)


def test_autoencoding_metric_and_loss_hand_computed():
    from leannet.multitask.heads import TASKS

    target = torch.tensor([[[[0, 255]], [[51, 102]], [[255, 0]]]], dtype=torch.uint8)  # 1×3×1×2
    pred = torch.tensor([[[[0.5, 1.0]], [[0.2, 0.2]], [[1.0, 1.0]]]])
    # |errors| = 0.5, 0, 0, 0.2, 0, 1 → mean 1.7 / 6
    m = AutoencodingMetric()
    m.update(pred, target)
    assert m.compute()["recon_err"] == pytest.approx(1.7 / 6)
    assert TASKS["autoencoding"].loss(pred, target).item() == pytest.approx(1.7 / 6, rel=1e-6)
    assert TASKS["autoencoding"].loss(target.float() / 255, target) == 0


def test_delta_m_signs():
    base = {"seg": {"miou": 0.5, "pixel_acc": 0.8}, "depth": {"abs_err": 1.0}}
    better = {"seg": {"miou": 0.55, "pixel_acc": 0.8}, "depth": {"abs_err": 0.9}}
    dm, per_task = delta_m(better, base)
    assert per_task["seg"] == pytest.approx(5.0) and per_task["depth"] == pytest.approx(10.0)
    assert dm == pytest.approx((10 + 0 + 10) / 3)
    assert delta_m(base, base)[0] == 0
    assert not math.isnan(dm)


def test_task_losses_reward_correct_predictions():
    from leannet.multitask.heads import TASKS

    target = torch.zeros(2, 6, 6, dtype=torch.int64)
    target[:, 2:4, 2:4] = 1
    good = torch.where(target.bool(), 8.0, -8.0).float().unsqueeze(1)
    assert TASKS["edges"].loss(good, target) < TASKS["edges"].loss(-good, target)
    depth = torch.rand(2, 6, 6) + 1
    assert TASKS["depth"].loss(depth.unsqueeze(1), depth) == 0
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 6, 6), dim=1)
    assert TASKS["normals"].loss(normals * 2, normals).abs() < 1e-6
    seg = torch.nn.functional.one_hot(target, 5).permute(0, 3, 1, 2).float() * 20
    assert TASKS["segmentation"].loss(seg, target) < 1e-6


def test_report_leaves_out_a_seed_whose_single_task_runs_are_incomplete():
    from leannet.multitask.report import SINGLE, summarize

    def run(variant, seed, metrics):
        return {"variant": variant, "seed": seed, "tasks": list(metrics), "metrics": metrics, "deployed_params": 1,
                "executed_blocks": {t: 2 for t in metrics}, "num_blocks": 2, "train_seconds": 1.0}

    seg, ae = {"miou": 0.5, "pixel_acc": 0.8}, {"recon_err": 0.1}
    runs = [run(SINGLE, 0, {"segmentation": seg}), run(SINGLE, 0, {"autoencoding": ae}),
            run(SINGLE, 1, {"segmentation": {"miou": 0.9, "pixel_acc": 0.9}}),  # seed 1's autoencoding not run yet
            run("hard", 0, {"segmentation": {"miou": 0.55, "pixel_acc": 0.8}, "autoencoding": {"recon_err": 0.1}})]
    summary = summarize(runs)
    assert summary[SINGLE]["seeds"] == [0]
    assert summary["hard"]["delta_m_by_seed"] == {"seed0": pytest.approx(10 / 3)}  # (10 + 0 + 0) / 3 metrics
