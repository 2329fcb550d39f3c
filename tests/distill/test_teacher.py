import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leannet.config import load_recipe
from leannet.distill import kd_loss, label_smoothing_loss, tfkd_reg_loss
from leannet.distill.teacher import model_state_dict
from leannet.errors import LeannetError
from leannet.models import build_model
from leannet.train import METHODS, build_method, load_trained, train
from leannet.train.callbacks import read_metrics, safe_torch_load
from leannet.train.run import make_trainer

REPO = Path(__file__).resolve().parents[2]
DIGITS = ("data.name=digits", "data.val_size=200")  # 8×8 images from scikit-learn: trains in seconds


def small_teacher():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_teacher_stays_outside_the_module_tree_and_frozen():
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), small_teacher()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = METHODS.get("kd")(student, 3, teacher=teacher, alpha=0.7, temperature=2.0, multiplier=0.5)
    assert {id(p) for p in method.parameters()} == {id(p) for p in student.parameters()}
    assert all(k.startswith("model.") for k in method.state_dict())
    method.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x, y = torch.randn(6, 1, 3, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    out = method((x, y))
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    for key, value in teacher.state_dict().items():  # eval mode: BN running stats untouched
        torch.testing.assert_close(value, before[key])
    z, t = student(x), teacher(x)
    expected = 0.3 * F.cross_entropy(z, y) + 0.7 * 0.5 * kd_loss(z, t, 2.0)
    torch.testing.assert_close(out["loss"], expected)
    assert set(out) == {"loss", "logits", "ce", "kd", "teacher_acc", "teacher_entropy"}


def test_teacher_from_a_checkpoint_file_and_model_section(tmp_path):
    torch.manual_seed(3)
    reference = build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28), width=0.5).eval()
    path = tmp_path / "teacher.pt"
    torch.save(reference.state_dict(), path)
    student = build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28), width=0.5)
    method = build_method({"name": "kd", "teacher": str(path), "teacher_model": {"name": "mlp", "width": 0.5}},
                          student, 10)
    assert method.teacher.module is None  # built on the first batch, from its shape
    x = torch.randn(4, 1, 28, 28)
    torch.manual_seed(5)
    method.teacher(x)
    after_build = torch.rand(3)
    torch.manual_seed(5)
    torch.testing.assert_close(after_build, torch.rand(3))  # building the teacher drew no random numbers
    torch.testing.assert_close(method.teacher(x), reference(x))
    with pytest.raises(LeannetError, match="no config.yaml beside teacher checkpoint .*teacher_model"):
        build_method({"name": "kd", "teacher": str(path)}, student, 10)
    wrong = build_method({"name": "kd", "teacher": str(path), "teacher_model": {"name": "mlp"}}, student, 10)
    with pytest.raises(LeannetError, match="do not fit model 'mlp' \\(width 1.0") as info:
        wrong((x, torch.zeros(4, dtype=torch.long)))
    assert "\n" not in str(info.value)


def test_checkpoint_prefixes_are_stripped():
    state = {"state_dict": {"method.model.fc._orig_mod.weight": torch.ones(1), "eval_acc.x": torch.zeros(1)}}
    assert list(model_state_dict(state)) == ["fc.weight"]
    assert list(model_state_dict({"module.conv.weight": torch.ones(1)})) == ["conv.weight"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "kd"}, "method 'kd' needs a teacher: method.teacher=RUN_DIR"),
        ({"name": "kd", "teacher": "no/such/run"}, "teacher 'no/such/run' not found"),
        ({"name": "kd", "teacher": "x", "alpha": 1.5}, r"method.alpha must be in \[0, 1\]"),
        ({"name": "tfkd_self"}, "has no teacher: train it with leannet.train.train"),
        ({"name": "tfkd_reg", "correct_prob": 0.0}, r"correct_prob must be in \(0, 1\]"),
        ({"name": "kd", "teacher": "x", "temprature": 2.0}, r"unknown key\(s\) \['temprature'\] for method 'kd'"),
    ],
)
def test_bad_settings_are_one_line_errors(config, message):
    with pytest.raises(LeannetError, match=message) as info:
        build_method(config, nn.Linear(2, 3), 3)
    assert "\n" not in str(info.value)


def test_lsr_and_tfkd_reg_methods_use_the_pure_losses():
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    for name in ("lsr", "label_smoothing"):
        out = build_method({"name": name, "smoothing": 0.2}, model, 4)((x, y))
        torch.testing.assert_close(out["loss"], label_smoothing_loss(model(x), y, 0.2))
    out = build_method({"name": "tfkd_reg", "alpha": 0.4, "temperature": 5.0, "multiplier": 2.0}, model, 4)((x, y))
    z = model(x)
    expected = 0.6 * F.cross_entropy(z, y) + 0.4 * 2.0 * tfkd_reg_loss(z, y, 5.0, 0.99, 1.0)
    torch.testing.assert_close(out["loss"], expected)


class KeepMethod(L.Callback):
    def on_fit_end(self, trainer, pl_module):
        self.method = pl_module.method


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kd_run_leaves_its_teacher_unchanged(tiny_recipe, tmp_path):
    teacher_dir = tmp_path / "teacher"
    train(tiny_recipe(*DIGITS, "trainer.save_epochs=[1]", "trainer.max_epochs=1"), run_dir=teacher_dir)
    epoch1 = teacher_dir / "checkpoints" / "epoch1.ckpt"
    assert safe_torch_load(epoch1)["epoch"] == 0  # saved at the end of the first epoch
    files = {p.name: digest(p) for p in (teacher_dir / "checkpoints").glob("*.ckpt")}
    keep = KeepMethod()
    student_dir = tmp_path / "student"
    config = tiny_recipe(*DIGITS, "method.name=kd", f"method.teacher={teacher_dir}",
                         "method.teacher_checkpoint=epoch1", "trainer.max_epochs=1")
    results = train(config, run_dir=student_dir, callbacks=[keep])
    teacher = keep.method.teacher.module
    assert not teacher.training
    saved = model_state_dict(safe_torch_load(epoch1))
    assert teacher.state_dict().keys() == saved.keys()
    for key, value in teacher.state_dict().items():  # weights and BN statistics
        assert torch.equal(value.cpu(), saved[key]), key
    assert {p.name: digest(p) for p in (teacher_dir / "checkpoints").glob("*.ckpt")} == files
    state = safe_torch_load(student_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(key.startswith(("method.model.", "eval_acc.")) for key in state)
    assert results["params"] == sum(p.numel() for p in keep.method.model.parameters())
    row = read_metrics(student_dir / "metrics.csv")[-1]
    assert row["train/kd"] > 0 and 0 <= row["train/teacher_acc"] <= 1
    config_back, built = load_trained(student_dir)  # a KD run reloads (its teacher is found again)
    assert config_back.method.teacher_checkpoint == "epoch1"
    with pytest.raises(LeannetError, match=r"trainer.save_epochs \[3\] outside 1..2"):
        make_trainer(tiny_recipe("trainer.save_epochs=[3]"), tmp_path / "bad")
    with pytest.raises(LeannetError, match="method.teacher_checkpoint can be one of: best, epoch1, last"):
        build_method({"name": "kd", "teacher": str(teacher_dir), "teacher_checkpoint": "epoch2"}, nn.Linear(2, 3), 3)


def test_tfkd_self_runs_both_stages_in_one_command(tiny_recipe, tmp_path):
    config = tiny_recipe(*DIGITS, "method.name=tfkd_self", "trainer.max_epochs=2", "model.name=mlp",
                         "model.width=0.25", "method.alpha=0.5")
    run_dir = tmp_path / "self"
    results = train(config, run_dir=run_dir)
    stage1 = json.loads((run_dir / "teacher" / "results.json").read_text())
    assert stage1["method"] == "ce" and stage1["name"] == "tiny_teacher" and stage1["test_acc"] > 0.3
    assert results["method"] == "tfkd_self" and results["test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert json.loads((run_dir / "results.json").read_text()) == pytest.approx(results)
    saved = load_recipe(run_dir / "config.yaml")
    assert saved.method.teacher == str(run_dir / "teacher") and saved.method.alpha == 0.5
    assert read_metrics(run_dir / "metrics.csv")[-1]["train/kd"] > 0


def test_seed_placeholder_in_teacher_path():
    config = load_recipe(None, ["method.name=kd", "method.teacher=runs/t/seed{seed}", "seed=3"])
    prepared = METHODS.get("kd").prepare(config, "unused")
    assert prepared.method.teacher == "runs/t/seed3" and config.method.teacher == "runs/t/seed{seed}"
    assert METHODS.get("ce").prepare(config, "unused") is config


@pytest.mark.slow
def test_tfkd_self_two_stages_under_ddp(tmp_path):
    """Two CPU processes (gloo): both stages land in one run directory; the teacher sits outside DDP."""
    argv = [sys.executable, "-m", "leannet.cli", "train", str(REPO / "recipes/baseline/fashion_mnist.yaml"),
            f"out_dir={tmp_path}", "name=ddp", "data.name=digits", "data.few_shot=40", "data.val_size=100",
            "data.batch_size=40",
            "model.name=mlp", "model.width=0.25", "method.name=tfkd_self", "trainer.max_epochs=1",
            "trainer.progress=none", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
            "trainer.threads=1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = sorted(p.parent for p in tmp_path.rglob("results.json"))
    assert run_dirs == [tmp_path / "ddp", tmp_path / "ddp" / "teacher"]
    saved = load_recipe(tmp_path / "ddp" / "config.yaml")
    assert saved.method.teacher == str(tmp_path / "ddp" / "teacher")


def test_official_multiplier_is_divided_by_the_datasets_classes():
    from leannet.distill.teacher import batch_mean_multiplier

    assert batch_mean_multiplier(1.0, None, 10) == 1.0
    assert batch_mean_multiplier(1.0, 50.0, 10) == 5.0  # Tf-KD self, ResNet18 setting, on a 10-class dataset
    assert batch_mean_multiplier(1.0, 100.0, 100) == 1.0  # Tf-KD reg on CIFAR-100: the weight the paper trained
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    reg = METHODS.get("tfkd_reg")(student, 10, official_multiplier=100.0)
    kd = METHODS.get("kd")(student, 10, teacher=nn.Sequential(nn.Flatten(), nn.Linear(12, 10)), official_multiplier=1.0)
    assert reg.multiplier == 10.0 and kd.multiplier == 0.1
    with pytest.raises(LeannetError, match="official_multiplier must be >= 0"):
        METHODS.get("tfkd_reg")(student, 10, official_multiplier=-1.0)
    with pytest.raises(LeannetError, match="teacher_bn 'fresh'; valid: stored, recompute"):
        METHODS.get("kd")(student, 10, teacher=student, teacher_bn="fresh")


def stale_teacher() -> nn.Module:
    teacher = small_teacher()
    teacher[2].running_mean.fill_(4.0)  # statistics of a network that no longer exists
    teacher[2].running_var.fill_(0.01)
    return teacher


@pytest.mark.parametrize("teacher_bn", ["stored", "recompute"])
def test_fit_start_reestimates_a_stale_teacher_only_when_asked(teacher_bn, capsys):
    torch.manual_seed(0)
    batches = [(torch.randn(32, 12), torch.randint(0, 3, (32,))) for _ in range(4)]
    method = METHODS.get("kd")(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), 3, teacher=stale_teacher(),
                               teacher_bn=teacher_bn, teacher_bn_batches=3)
    method.fit_start(iter(batches))
    bn = method.teacher.module[2]
    assert (bn.running_mean == 4.0).all() == (teacher_bn == "stored")
    if teacher_bn == "recompute":
        assert int(bn.num_batches_tracked) == 3 and not method.teacher.module.training
    stats = method.summary()
    assert set(stats) == {"teacher_train_acc", "teacher_train_entropy"}
    assert 0 <= stats["teacher_train_acc"] <= 1 and 0 <= stats["teacher_train_entropy"] <= torch.log(torch.tensor(3.0))
    assert f"BatchNorm statistics {teacher_bn}" in capsys.readouterr().out


def test_entropy_golden_values():
    from leannet.distill.teacher import entropy

    uniform, certain = torch.zeros(2, 4), torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(entropy(uniform), torch.log(torch.tensor(4.0)))
    assert entropy(certain) < 1e-6


def test_kd_recipe_with_teacher_bn_recompute_records_the_teacher(tiny_recipe, tmp_path):
    teacher_dir = tmp_path / "teacher"
    train(tiny_recipe(*DIGITS, "trainer.save_epochs=[1]", "trainer.max_epochs=1"), run_dir=teacher_dir)
    saved = model_state_dict(safe_torch_load(teacher_dir / "checkpoints" / "epoch1.ckpt"))
    keep = KeepMethod()
    config = tiny_recipe(*DIGITS, "method.name=kd", f"method.teacher={teacher_dir}", "method.teacher_checkpoint=epoch1",
                         "method.teacher_bn=recompute", "method.teacher_bn_batches=2", "method.official_multiplier=1.0",
                         "trainer.max_epochs=1")
    results = train(config, run_dir=tmp_path / "student", callbacks=[keep])
    teacher = keep.method.teacher.module.state_dict()
    means = [k for k in saved if k.endswith("running_mean")]
    assert means and all(not torch.equal(teacher[k].cpu(), saved[k]) for k in means)
    assert all(torch.equal(teacher[k].cpu(), saved[k]) for k in saved if k.endswith("weight"))  # weights kept
    assert keep.method.multiplier == pytest.approx(0.1)  # digits has 10 classes
    assert 0 <= results["teacher_train_acc"] <= 1 and results["teacher_train_entropy"] > 0
    assert "train/teacher_entropy" in read_metrics(tmp_path / "student" / "metrics.csv")[-1]
