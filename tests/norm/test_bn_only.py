import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from leannet.config import FreezeConfig, OptimConfig
from leannet.errors import LeannetError
from leannet.models import build_model, count_parameters
from leannet.norm import apply_freeze_config, freeze
from leannet.train.optim import build_optimizer


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def resnet8(norm="bn"):
    torch.manual_seed(0)
    return build_model("resnet8", 10, in_channels=1, width=0.5, norm=norm)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def norm_names(model):
    # resnet8 at width 0.5: stem.1, layerK.0.bn1/bn2 and the two shortcut BNs (layer2/3 .0.shortcut.1)
    return {n for n, _ in model.named_parameters() if ".bn" in n or n.startswith("stem.1.") or "shortcut.1." in n}


def bn_channels(model):
    return sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_bn_only_and_friends_leave_exactly_the_intended_parameters():
    model = freeze(resnet8(), "bn_only")
    names = norm_names(model)
    assert trainable_names(model) == names and len(names) == 2 * 9  # 9 BN layers, γ and β each
    # BN channels: stem 8; layer1 8 + 8; layer2 and layer3 three BNs (bn1, bn2, shortcut) of 16 and 32
    assert count_parameters(model, trainable_only=True) == 2 * bn_channels(model) == 2 * (8 + 2 * 8 + 3 * 16 + 3 * 32)
    assert trainable_names(freeze(resnet8(), "bn_and_output")) == names | {"fc.weight", "fc.bias"}
    assert trainable_names(freeze(resnet8(), "output_only")) == {"fc.weight", "fc.bias"}
    model = resnet8()
    model.fc.bias.requires_grad_(False)
    assert freeze(model, "none") is model and "fc.bias" not in trainable_names(model)


def test_bn_only_on_rbn_trains_all_norm_parameters():
    model = freeze(resnet8("rbn"), "bn_only")
    channels = sum(m.num_features for m in model.modules() if hasattr(m, "center_weight"))
    assert count_parameters(model, trainable_only=True) == 5 * channels
    assert all("weight" in n or "bias" in n for n in trainable_names(model))


def sgd_steps(model, steps=3):
    cfg = OmegaConf.structured(OptimConfig(lr=0.5, momentum=0.9, nesterov=True, weight_decay=5e-2))
    opt = build_optimizer(model, cfg)  # leannet's own optimizer with weight decay on every group
    torch.manual_seed(1)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_random_per_channel_trains_two_entries_per_channel_and_nothing_else():
    reference = resnet8()
    budget = 2 * bn_channels(reference)
    model = freeze(resnet8(), "random_per_channel", seed=3)
    assert count_parameters(model, trainable_only=True) == budget
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    before = {n: m.weight.detach().clone() for n, m in convs.items()}
    chosen = {n: torch.zeros(m.weight.numel(), dtype=torch.bool).index_fill_(
        0, m.parametrizations.weight[0].index, True).view_as(m.weight) for n, m in convs.items()}
    for n, mask in chosen.items():  # every output channel: exactly two trainable entries
        assert mask.flatten(1).sum(1).tolist() == [2] * mask.shape[0], n
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    stats = model.stem[1].running_mean.clone()
    sgd_steps(model)
    for n, m in convs.items():
        after = m.weight.detach()
        assert torch.equal(after[~chosen[n]], before[n][~chosen[n]]), n  # bit-identical
        assert not torch.equal(after[chosen[n]], before[n][chosen[n]]), n
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n
    assert not torch.equal(model.stem[1].running_mean, stats)  # BN statistics keep updating
    other = freeze(resnet8(), "random_per_channel", seed=4)
    index = convs["stem.0"].parametrizations.weight[0].index
    assert not torch.equal(other.stem[0].parametrizations.weight[0].index, index)


def test_frozen_bn_only_keeps_weights_and_updates_statistics():
    model = freeze(resnet8(), "bn_only")
    conv = model.layer1[0].conv1.weight.detach().clone()
    gamma = model.layer1[0].bn1.weight.detach().clone()
    stats = model.layer1[0].bn1.running_var.clone()
    sgd_steps(model)
    assert torch.equal(model.layer1[0].conv1.weight, conv)
    assert not torch.equal(model.layer1[0].bn1.weight, gamma)
    assert not torch.equal(model.layer1[0].bn1.running_var, stats)


def test_inits_and_errors():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, in_channels=1, width=2)
    cfg = OmegaConf.structured(FreezeConfig(mode="bn_only", weight_init="kaiming_fan_in", bn_init="uniform"))
    apply_freeze_config(model, cfg, seed=0)
    conv = model.layer3[1].conv1.weight  # fan_in 128·9: std sqrt(2 / 1152)
    assert conv.std().item() == pytest.approx((2 / 1152) ** 0.5, rel=0.05)
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert gammas.min() >= 0 and gammas.max() < 1 and 0.45 < gammas.mean() < 0.55
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(LeannetError, match="valid freeze modes: bn_and_output, bn_only, none, output_only"):
        freeze(model, "bn")
    with pytest.raises(LeannetError, match="valid bn inits"):
        apply_freeze_config(model, OmegaConf.structured(FreezeConfig(bn_init="normal")), seed=0)
    with pytest.raises(LeannetError, match="no submodule 'head'"):
        freeze(model, "output_only", output="head")


@pytest.mark.fashion
def test_recipe_freeze_section_trainable_count_and_analysis(tiny_recipe, tmp_path, capsys):
    from leannet.norm.analysis import analyze_gamma, analyze_rbn_std
    from leannet.train import train
    from leannet.train.run import load_trained

    config = tiny_recipe("model.norm=rbn", "freeze.mode=random_per_channel", "freeze.weight_init=kaiming_fan_in",
                         "freeze.bn_init=uniform", "trainer.max_epochs=1", "trainer.threads=1")
    results = train(config, run_dir=tmp_path / "run")
    budget = 5 * bn_channels(resnet8())  # RBN: γ, β, w_m, w_v, w_b per channel
    assert results["trainable_params"] == budget
    assert json.loads((tmp_path / "run" / "results.json").read_text())["trainable_params"] == budget
    assert f"({budget:,} trainable)" in capsys.readouterr().out
    _, built = load_trained(tmp_path / "run", "last")  # the parametrized weights load back
    assert count_parameters(built.method, trainable_only=True) == budget

    rows = analyze_gamma([tmp_path / "run"], tmp_path / "out", limit=100)
    assert rows[0]["name"] == "tiny" and 0 <= rows[0]["dead_relu_units"][0] <= 1
    assert [r["dead_relu_units"] for r in rows[0]["per_seed"]] == [rows[0]["dead_relu_units"][0]]  # one seed
    assert (tmp_path / "out" / "gamma_hist.png").stat().st_size > 1000
    assert "dead relu units" in (tmp_path / "out" / "gamma.md").read_text()
    result = analyze_rbn_std(tmp_path / "run", "layer2.0.bn1", tmp_path / "out", images=64)
    assert len(result["std_before_batch"]) == len(result["std_after_instance"]) == 16
    assert json.loads((tmp_path / "out" / "rbn_std.json").read_text())["layer"] == "layer2.0.bn1"
