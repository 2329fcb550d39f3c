from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.explain import collect_activations, dissect, label_probe, unit_thresholds, upsampled_masks
from leannet.explain.dissect import pack_stream
from leannet.explain.search import unpack_bits


def test_threshold_is_top_quantile_over_all_positions():
    acts = np.arange(200, dtype=np.float32).reshape(2, 1, 10, 10)     # one unit, values 0..199
    acts = np.concatenate([acts, -acts], axis=1)                       # a second unit, values 0..-199
    t = unit_thresholds(acts, 0.005)
    assert t[0] == pytest.approx(199 * 0.995)                           # linear-interpolation quantile
    assert t[1] == pytest.approx(-199 * 0.005)
    assert (acts[:, 0] > t[0]).sum() == 1                               # 0.5 % of the 200 positions
    with pytest.raises(LeannetError):
        unit_thresholds(acts, 1.5)


def test_bilinear_upsampling_then_threshold_by_hand():
    acts = np.array([[[[0.0, 1.0], [2.0, 3.0]]]], np.float32)          # 1 image, 1 unit, 2×2
    m = upsampled_masks(acts, np.array([1.9]), (4, 4))
    # align_corners=False: output pixel centres map to input x = (i + 0.5)/2 - 0.5 → -0.25, 0.25, 0.75, 1.25
    # (clamped to 0..1); value = col + 2·row → rows [0, .25, .75, 1]·2 + cols [0, .25, .75, 1]
    rows = np.array([0, 0.25, 0.75, 1.0])
    values = 2 * rows[:, None] + rows[None, :]
    assert (m[0, 0] == (values > 1.9)).all()


def test_pack_stream_matches_packing_the_whole():
    rng = np.random.default_rng(0)
    full = rng.random((3, 8 * 5 + 3)) < 0.4
    chunks = [full[:, :16], full[:, 16:40], full[:, 40:]]
    words = pack_stream(iter(chunks), 3, full.shape[1])
    assert (unpack_bits(words, full.shape[1]) == full).all()


def _toy(count=40, size=8, seed=0):
    """Images whose channels are two concept masks; a 1×1 conv computes a, a − b, a + b."""
    rng = np.random.default_rng(seed)
    labels_a = np.full((count, size, size), -1)
    labels_b = np.full((count, size, size), -1)
    for i in range(count):
        for labels in (labels_a, labels_b):
            y, x = rng.integers(0, size - 3, 2)
            labels[i, y : y + 3, x : x + 3] = 0
    images = np.zeros((count, 3, size, size), np.uint8)
    images[:, 0] = (labels_a == 0) * 255
    images[:, 1] = (labels_b == 0) * 255
    probe = label_probe(images, {"a": (labels_a, ["a"]), "b": (labels_b, ["b"])},
                        {"scene": (rng.integers(0, 2, count), ["indoor", "outdoor"])})
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1
        conv.weight[1, 0], conv.weight[1, 1] = 1, -1
        conv.weight[2, 0], conv.weight[2, 1] = 1, 1
    model = nn.Sequential(OrderedDict(feat=conv, pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))
    return probe, model


def test_dissect_end_to_end_recovers_units_and_iou_is_summed(tmp_path):
    probe, model = _toy()
    # quantile 0.5: every unit's threshold is 0 (most positions are 0), so a unit fires where act > 0
    d = dissect(model, "feat", probe, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255), quantile=0.5,
                cache_dir=tmp_path)
    assert (tmp_path / "acts_feat.npy").is_file()
    assert d.thresholds.tolist() == [0, 0, 0]
    ex = d.explain(max_length=2)
    assert [str(e.formula) for e in ex] == ["a", "a AND NOT b", "a OR b"]
    assert [e.iou for e in ex] == [1.0, 1.0, 1.0]
    rows = d.rows(ex)
    assert rows[0]["label"] == "a" and rows[0]["interpretable"] and rows[0]["label_category"] == "a"
    # NetDissect IoU of unit 1 with concept a, by hand: summed over images, not a mean of per-image IoUs
    masks = probe.masks(np.arange(len(probe)))
    unit1 = masks[0] & ~masks[1]
    inter, union = (unit1 & masks[0]).sum(), (unit1 | masks[0]).sum()
    assert ex[1].history[0][0] == (ex[1].history[0][0][0], inter / union)


def test_iou_is_summed_over_images_by_hand():
    # image 0: unit and concept on the same single pixel (IoU 1); image 1: unit on 3 pixels, concept on
    # one of them (IoU 1/3). Dataset IoU = (1 + 1) / (1 + 3) = 0.5, not the mean 2/3 of per-image IoUs.
    unit = np.zeros((2, 2, 2), bool)
    concept = np.zeros((1, 2, 2, 2), bool)
    unit[0, 0, 0] = concept[0, 0, 0, 0] = True
    unit[1, 0, :] = unit[1, 1, 0] = True
    concept[0, 1, 0, 0] = True
    from leannet.explain import beam_search

    assert beam_search(unit, concept, ["c"], max_length=1).iou == 0.5


def test_collect_activations_hook_and_errors():
    probe, model = _toy(count=10)
    acts = collect_activations(model, "feat", probe.images, (0, 0, 0), (1, 1, 1), batch_size=3)
    assert acts.shape == (10, 3, 8, 8) and acts.dtype == np.float32
    assert model.training  # mode restored
    flat = collect_activations(model, "flat", probe.images, (0, 0, 0), (1, 1, 1), batch_size=4)
    assert flat.shape == (10, 3, 1, 1)
    with pytest.raises(LeannetError, match="no layer 'nope'.*feat"):
        collect_activations(model, "nope", probe.images, (0, 0, 0), (1, 1, 1))


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_images_are_refused_with_what_to_pass(scale):
    """dissect takes uint8 0..255 images (it divides by 255): float [0, 1] images used to go in as black."""
    probe, model = _toy(count=10)
    probe.images = probe.images.astype(np.float32) / 255 * scale
    with pytest.raises(LeannetError, match=r"probe images must be uint8 0\.\.255.*got float32.*astype\(np.uint8\)"):
        dissect(model, "feat", probe, mean=(0, 0, 0), std=(1, 1, 1))
