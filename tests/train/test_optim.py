import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from leannet.config import OptimConfig, ScheduleConfig
from leannet.train.optim import build_optimizer, build_schedule, param_groups


def lrs(name, epochs=4, steps=10, **kw):
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, OmegaConf.structured(OptimConfig(lr=1.0)))
    sched = build_schedule(opt, OmegaConf.structured(ScheduleConfig(name=name, **kw)), steps, epochs)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup():
    values = lrs("cosine", warmup_epochs=1)
    assert values[0] == pytest.approx(0.1)  # step 1 of 10 warm-up steps
    assert values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)  # cosine starts at the peak
    assert values[-1] < 0.01
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_multistep_in_epochs():
    values = lrs("multistep", milestones=[2, 3], gamma=0.1)
    assert values[19] == pytest.approx(1.0)
    assert values[20] == pytest.approx(0.1)
    assert values[30] == pytest.approx(0.01)


def test_onecycle_peaks_at_lr():
    values = lrs("onecycle", pct_start=0.25)
    assert max(values) == pytest.approx(1.0, rel=1e-3)
    assert values[0] < 0.1 and values[-1] < 0.01


def test_no_decay_for_norm_and_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    groups = param_groups(model, 5e-4, decay_norm_and_bias=False)
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert groups[1]["weight_decay"] == 0.0
    frozen = nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    assert sum(len(g["params"]) for g in param_groups(frozen, 0.1, True)) == 1


def test_sgd_and_adamw():
    model = nn.Linear(2, 2)
    sgd = build_optimizer(model, OmegaConf.structured(OptimConfig(name="sgd", nesterov=True)))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    adamw = build_optimizer(model, OmegaConf.structured(OptimConfig(name="adamw", lr=1e-3)))
    assert isinstance(adamw, torch.optim.AdamW)
