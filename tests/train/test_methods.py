import math

import pytest
import torch
from torch import nn

from leannet.distill.losses import smoothed_targets, soft_cross_entropy
from leannet.errors import LeannetError
from leannet.method import METHODS, build_method


def test_smoothed_targets_golden():
    targets = smoothed_targets(torch.tensor([2, 0]), num_classes=4, smoothing=0.3)
    expected = torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]])
    torch.testing.assert_close(targets, expected)


def test_soft_cross_entropy_golden():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    targets = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_zero_equals_cross_entropy():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    batch = (torch.randn(8, 5), torch.randint(0, 3, (8,)))
    ls = build_method({"name": "label_smoothing", "smoothing": 0.0}, model, 3)(batch)
    ce = build_method({"name": "ce"}, model, 3)(batch)
    torch.testing.assert_close(ls["loss"], ce["loss"])
    assert ls["logits"].shape == (8, 3)


def test_method_keys_are_validated():
    model = nn.Linear(2, 2)
    with pytest.raises(LeannetError, match=r"unknown key\(s\) "
                       r"\['smoth'\] for method 'label_smoothing'; valid keys: smoothing"):
        build_method({"name": "label_smoothing", "smoth": 0.1}, model, 2)
    with pytest.raises(LeannetError, match="method.smoothing of 'label_smoothing' must be float"):
        build_method({"name": "label_smoothing", "smoothing": "lots"}, model, 2)
    with pytest.raises(LeannetError, match="unknown method 'kd2'; valid methods: .*ce.*label_smoothing"):
        build_method({"name": "kd2"}, model, 2)


def test_registry_has_first_methods():
    assert {"ce", "label_smoothing"} <= set(METHODS.names())
