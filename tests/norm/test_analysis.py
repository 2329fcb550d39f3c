import pytest
import torch
from torch import nn

from leannet.norm import RepresentativeBatchNorm2d
from leannet.norm.analysis import calibration_std, dead_relu_fraction, gamma_summary, gamma_values


def test_gamma_summary_by_hand():
    gammas = torch.tensor([0.005, -0.02, 0.07, 0.5])
    summary = gamma_summary(gammas)
    assert summary["frac_abs_gamma_below_0.01"] == 0.25
    assert summary["frac_abs_gamma_below_0.05"] == 0.5
    assert summary["frac_abs_gamma_below_0.1"] == 0.75
    assert summary["frac_negative_gamma"] == 0.25
    assert summary["mean_abs_gamma"] == pytest.approx(0.595 / 4)
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), RepresentativeBatchNorm2d(3))
    assert gamma_values(model).tolist() == [1.0] * 5


class Twice(nn.Module):
    """One ReLU module applied twice, to different features."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(3, 2)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
            self.a.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))  # unit 2 never fires
            self.b.weight.zero_()
            self.b.bias.copy_(torch.tensor([1.0, -1.0]))  # unit 1 never fires

    def forward(self, x):
        return self.relu(self.b(self.relu(self.a(x))))


def test_dead_relus_counted_per_call():
    x = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])
    dead = dead_relu_fraction(Twice(), [(x, None), (x[:1], None)])
    assert dead == {"dead_relu_units": 2 / 5, "dead_relu_channels": 2 / 5}


def test_dead_relu_units_and_channels_of_feature_maps():
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    x = torch.tensor([[[[1.0, -1.0], [0.0, 0.0]]]])  # channel 0 fires at one of 4 positions, channel 1 at one
    dead = dead_relu_fraction(nn.Sequential(conv, nn.ReLU()), [x])
    assert dead == {"dead_relu_units": 6 / 8, "dead_relu_channels": 0.0}


def test_calibration_std_at_init_is_sigmoid_one():
    layer = RepresentativeBatchNorm2d(4).eval()
    layer.running_var.fill_(2.0)
    std = calibration_std(layer, torch.randn(8, 4, 5, 5))
    gate = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(std["calibrated"], std["standardized"] * gate)
    torch.testing.assert_close(std["calibrated_instance"], std["standardized_instance"] * gate)
