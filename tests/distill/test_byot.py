import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leannet.config import load_recipe
from leannet.distill import SelfDistillation, byot_loss, dynamic_exit, dynamic_exit_curve, hint_loss, kd_loss
from leannet.distill.byot import count_macs
from leannet.errors import LeannetError
from leannet.models import build_model
from leannet.train import build_method, train
from leannet.train.methods import Method

REPO = Path(__file__).resolve().parents[2]


def resnet8(norm: str = "bn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet8", num_classes=5, in_channels=1, norm=norm, width=0.5)


def count_calls(model: nn.Module) -> Counter:
    """Counts each module's forward calls (pre-hooks: a call counts as soon as it starts)."""
    calls: Counter = Counter()
    for name, module in model.named_modules():
        if name:
            module.register_forward_pre_hook(lambda m, i, name=name: calls.update([name]))
    return calls


def test_hooks_leave_the_model_output_unchanged():
    model = resnet8().eval()
    x = torch.randn(4, 1, 16, 16)
    before = model(x)
    net = SelfDistillation(model).eval()
    out = net(x)
    torch.testing.assert_close(out.logits, before, rtol=0, atol=0)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # calling the model directly: no capture
    assert net.exit_names == ["layer1", "layer2"] and net.num_exits == 3
    assert [z.shape for z in out.all_logits] == [(4, 5)] * 3
    assert [f.shape for f in out.exit_features] == [out.feature.shape] * 2 == [(4, 32)] * 2
    torch.testing.assert_close(out.feature, model.pool(model.layer3(model.layer2(model.layer1(model.stem(x))))))
    torch.testing.assert_close(out.ensemble, (out.all_logits[0] + out.all_logits[1] + out.logits) / 3)


def test_probe_does_not_touch_running_statistics():
    model = resnet8()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SelfDistillation(model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert model.training


def test_exits_follow_the_models_dtype_and_device():
    """A float64 model: exits built in float64; a model moved after wrapping takes its exits along."""
    model = resnet8().double()
    net = SelfDistillation(model)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    out = net(x)
    assert all(z.dtype == torch.float64 for z in out.all_logits)
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    byot_loss(out, torch.tensor([0, 1, 2]), alpha=0.3, temperature=3.0)["loss"].backward()
    assert net.exit_at(1)(x).dtype == torch.float64
    model.float()  # the wrapped model moved on its own: the exits follow on the next forward
    assert all(z.dtype == torch.float32 for z in net(x.float()).all_logits)
    assert net.exit_at(2)(x.float()).dtype == torch.float32
    assert {p.dtype for p in net.parameters()} == {torch.float32}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_exits_follow_a_cuda_model():
    net = SelfDistillation(resnet8().cuda())
    assert {p.device.type for p in net.parameters()} == {"cuda"}
    assert net(torch.randn(2, 1, 16, 16, device="cuda")).exit_logits[0].device.type == "cuda"


def test_exit_at_stops_the_backbone():
    model = resnet8().eval()
    net = SelfDistillation(model).eval()
    calls = count_calls(model)
    x = torch.randn(2, 1, 16, 16)
    full = net(x)
    for k in (1, 2):
        calls.clear()
        z = net.exit_at(k)(x)
        torch.testing.assert_close(z, full.exit_logits[k - 1])
        assert calls["stem"] == 1 and calls[f"layer{k}"] == 1
        deeper = [f"layer{j}" for j in range(k + 1, 4)] + ["pool", "fc", "layer3.0.conv1"]
        assert all(calls[name] == 0 for name in deeper), calls
    calls.clear()
    torch.testing.assert_close(net.exit_at(3)(x), full.logits)
    assert calls["fc"] == 1
    with pytest.raises(LeannetError, match="classifiers 1..3"):
        net.exit_at(4)
    macs = [count_macs(net.exit_at(k), x[:1]) for k in (1, 2, 3)]
    assert macs[0] < macs[1] < macs[2] == count_macs(model, x[:1])


def test_loss_terms_match_hand_computation():
    torch.manual_seed(0)
    net = SelfDistillation(resnet8())
    x, y = torch.randn(6, 1, 16, 16), torch.randint(0, 5, (6,))
    out = net(x)
    terms = byot_loss(out, y, alpha=0.3, temperature=2.0, hint_weight=0.01)
    ce = sum(F.cross_entropy(z, y) for z in out.all_logits)
    kl = 0.0
    for z in out.exit_logits:  # T² · Σ_k p_k (log p_k − log q_k), batch mean
        p = F.softmax(out.logits / 2.0, dim=1)
        q = F.log_softmax(z / 2.0, dim=1)
        kl = kl + 4.0 * (p * (p.log() - q)).sum(dim=1).mean()
    hint = sum(((f - out.feature) ** 2).sum() for f in out.exit_features)
    torch.testing.assert_close(terms["sup"], ce)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["hint"], hint)
    torch.testing.assert_close(terms["loss"], 0.7 * ce + 0.3 * kl + 0.01 * hint)
    assert hint_loss(torch.ones(2, 3), torch.zeros(2, 3)).item() == 6.0


def test_deepest_classifier_learns_from_labels_only():
    torch.manual_seed(0)
    net = SelfDistillation(resnet8())
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 5, (4,))
    out = net(x)
    distill = byot_loss(out, y, alpha=0.5, temperature=3.0, hint_weight=1.0)
    (distill["kl"] + distill["hint"]).backward()
    assert net.model.fc.weight.grad is None and net.model.layer3[0].conv1.weight.grad is None
    assert net.classifiers[0].fc.weight.grad is not None
    assert kd_loss(out.exit_logits[0], out.logits, 3.0).requires_grad


def test_export_round_trip(tmp_path):
    model = resnet8()
    net = SelfDistillation(model)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    plain = net.export().eval()
    assert type(plain) is type(model) and not any(m._forward_hooks or m._forward_pre_hooks for m in plain.modules())
    buffer = io.BytesIO()
    torch.save(plain.state_dict(), buffer)
    buffer.seek(0)
    fresh = resnet8(seed=9).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(fresh(x), net.eval()(x).logits)
    assert len(net._handles) == 3  # the wrapper keeps its hooks


def test_a_deep_copy_is_independent():
    import copy

    net = SelfDistillation(resnet8()).eval()
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.model.fc.bias.add_(1.0)
    x = torch.randn(2, 1, 16, 16)
    out, twin_out = net(x), twin(x)
    torch.testing.assert_close(twin_out.logits, out.logits + 1.0)
    torch.testing.assert_close(twin.exit_at(1)(x), twin_out.exit_logits[0])


def test_torchvision_resnet_defaults_and_bad_paths():
    torch.manual_seed(0)
    model = build_model("tv:resnet18", num_classes=4, in_channels=1).eval()
    net = SelfDistillation(model, input_shape=(1, 32, 32)).eval()
    assert net.exit_names == ["layer1", "layer2", "layer3"]
    assert [c.bottleneck.body[3].stride for c in net.classifiers] == [(8, 8), (4, 4), (2, 2)]
    out = net(torch.randn(2, 1, 32, 32))
    assert len(out.all_logits) == 4 and out.feature.shape == (2, 512)
    with pytest.raises(LeannetError, match="not in ResNet; valid paths include: conv1"):
        SelfDistillation(model, exits=["layer9"])
    with pytest.raises(LeannetError, match="no default exits for Sequential"):
        SelfDistillation(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))


def test_custom_exit_paths_on_any_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    net = SelfDistillation(model, exits=["1"], head="6", input_shape=(1, 12, 12))
    out = net(torch.randn(2, 1, 12, 12))
    assert out.exit_logits[0].shape == (2, 3) and out.exit_features[0].shape == (2, 16)
    assert net.classifiers[0].bottleneck.body[3].stride == (2, 2)


def test_dynamic_exit_picks_the_first_confident_classifier():
    sure, unsure = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.1, 0.0]])
    logits = [torch.cat([sure, unsure, unsure]), torch.cat([unsure, sure, unsure]), torch.cat([unsure, unsure, sure])]
    assert dynamic_exit(logits, 0.9).tolist() == [0, 1, 2]
    assert dynamic_exit(logits, 0.0).tolist() == [0, 0, 0]
    labels = torch.tensor([0, 0, 1])
    rows = dynamic_exit_curve(logits, labels, [1.0, 2.0, 4.0], [0.0, 0.9])
    assert rows[0]["avg_cost"] == 1.0 and rows[0]["accuracy"] == pytest.approx(2 / 3)
    assert rows[1]["avg_cost"] == pytest.approx(7 / 3) and rows[1]["frac_exit3"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("target", ["lsr", "tfkd_reg"])
def test_recipe_method_targets_and_rbn(target):
    model = resnet8(norm="rbn")
    method = build_method({"name": "byot", "target": target, "alpha": 0.2, "exits": ["layer1"]}, model, 5)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 5, (4,))
    out = method((x, y))
    out["loss"].backward()
    assert set(out) == {"loss", "logits", "sup", "kl", "hint"} and torch.isfinite(out["loss"])
    assert set(method.eval().eval_logits(x)) == {"", "exit1", "exit2", "ensemble"}
    torch.testing.assert_close(method.predict(x), model(x))
    with pytest.raises(LeannetError, match="unknown method.target 'kd'; valid: ce, lsr, tfkd_reg"):
        build_method({"name": "byot", "target": "kd"}, resnet8(), 5)


def test_default_eval_logits_is_predict():
    model = nn.Linear(3, 2)
    method = build_method({"name": "ce"}, model, 2)
    x = torch.randn(4, 3)
    assert list(method.eval_logits(x)) == [""] and isinstance(method, Method)


def test_one_epoch_end_to_end(tmp_path):
    config = load_recipe(REPO / "recipes/baseline/fashion_mnist.yaml", [
        f"out_dir={tmp_path}", "name=byot", "data.name=digits", "data.val_size=200", "data.batch_size=64",
        "model.name=resnet8", "model.width=0.5", "trainer.max_epochs=1", "trainer.progress=none",
        "method.name=byot", "trainer.threads=1",
    ])
    results = train(config)
    saved = json.loads((tmp_path / "byot" / "results.json").read_text())
    for key in ("test_acc", "test_acc_exit1", "test_acc_exit2", "test_acc_exit3", "test_acc_ensemble"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["test_acc_exit3"] == pytest.approx(saved["test_acc"]) and results["method"] == "byot"
    header = (tmp_path / "byot" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/acc_exit1", "val/acc_ensemble", "train/kl", "train/hint"} <= set(header)


FASHION_SLOW = [pytest.mark.fashion, pytest.mark.slow]


@pytest.mark.parametrize(("data", "size"), [pytest.param("fashion_mnist", 28, marks=FASHION_SLOW), ("digits", 8)])
def test_tv_resnet18_from_the_recipe_at_the_data_size(tmp_path, data, size):
    """Issue 18: the exit shapes come from a probe of the dataset's own shape, not 32×32."""
    config = load_recipe("byot/tv_resnet18_fashion_mnist", [
        f"out_dir={tmp_path}", "name=tv", f"data.name={data}", "data.few_shot=5", "data.val_size=50",
        "data.batch_size=25", "trainer.max_epochs=1", "trainer.progress=none", "trainer.threads=1",
    ])
    assert config.model.name == "tv:resnet18" and config.method.name == "byot"
    results = train(config)
    assert results["epochs"] == 1 and {f"test_acc_exit{k}" for k in range(1, 5)} <= set(results)
    saved = load_recipe(tmp_path / "tv" / "config.yaml")
    assert saved.method.get("input_shape") is None  # filled in at build time, so a resume probes the same way
    # an explicit method.input_shape of the data's size builds exits that run at that size
    net = build_method({"name": "byot", "input_shape": [1, size, size]},
                       build_model("tv:resnet18", num_classes=10, in_channels=1), 10).net
    assert net(torch.randn(2, 1, size, size)).logits.shape == (2, 10)


def test_byot_input_shape_key():
    model = build_model("tv:resnet18", num_classes=3, in_channels=1)
    with pytest.raises(LeannetError, match=r"method.input_shape must be \[C, H, W\]"):
        build_method({"name": "byot", "input_shape": [28, 28]}, model, 3)
    method = build_method({"name": "byot"}, model, 3, input_shape=(1, 28, 28))
    assert method.net(torch.randn(2, 1, 28, 28)).logits.shape == (2, 3)
    with pytest.raises(RuntimeError):  # the 32×32 guess of old builds an 8×8 kernel for a 7×7 map
        build_method({"name": "byot"}, build_model("tv:resnet18", num_classes=3, in_channels=1), 3).net(
            torch.randn(2, 1, 28, 28))
