import json
import time

import pytest
import torch

from leannet.errors import LeannetError
from leannet.train import Method, NonFiniteLossError, register_method, resume, train
from leannet.train.callbacks import FailAfterEpoch, safe_torch_load
from leannet.train.run import load_trained

pytestmark = pytest.mark.fashion


def test_run_directory_and_results(tiny_recipe, tmp_path):
    results = train(tiny_recipe())
    run_dir = tmp_path / "runs" / "tiny"
    for name in ("config.yaml", "env.json", "metrics.csv", "results.json", "checkpoints/last.ckpt",
                 "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == pytest.approx(results)
    assert results["epochs"] == 2
    assert results["test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert results["params"] == results["trainable_params"] > 0
    assert results["images_per_s"] > 0 and results["epoch_seconds"] > 0
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] == torch.__version__.split("+")[0]
    assert env["threads"]["count"] == env["torch_threads"] and env["threads"]["reason"].startswith("auto: ")
    # a second run with the same name never overwrites the first
    train(tiny_recipe("trainer.max_epochs=1"))
    assert (tmp_path / "runs" / "tiny-2" / "results.json").is_file()
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2


def _weights(run_dir):
    return safe_torch_load(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def test_interrupted_run_resumes_to_identical_weights(tiny_recipe, tmp_path):
    config = tiny_recipe("trainer.max_epochs=3")
    train(config, run_dir=tmp_path / "straight")
    with pytest.raises(InterruptedError):
        train(config, run_dir=tmp_path / "broken", callbacks=[FailAfterEpoch(1)])
    assert safe_torch_load(tmp_path / "broken" / "checkpoints" / "last.ckpt")["epoch"] == 0
    counted = safe_torch_load(tmp_path / "broken" / "checkpoints" / "last.ckpt")["callbacks"]["TrainClock"]["seconds"]
    assert counted > 0
    start = time.perf_counter()
    results = resume(tmp_path / "broken")
    second_segment = time.perf_counter() - start
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "broken")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # train_seconds counts the first segment (up to its checkpoint) as well as the resumed one
    assert counted < results["train_seconds"] < counted + second_segment


def test_last_checkpoint_is_the_last_epoch_even_without_a_new_best(tiny_recipe, tmp_path):
    # lr 0 on a model without BN: validation accuracy never improves after epoch 1, so the best stays epoch 0
    train(tiny_recipe("trainer.max_epochs=3", "optim.lr=0.0", "model.name=mlp"), run_dir=tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert safe_torch_load(checkpoints / "best.ckpt")["epoch"] == 0
    assert safe_torch_load(checkpoints / "last.ckpt")["epoch"] == 2


@register_method("nan_after_first_epoch")
class NanAfterFirstEpoch(Method):
    """Cross-entropy that turns into NaN after `steps` optimizer steps (for the failure test)."""

    def __init__(self, model, num_classes, *, steps: int = 4) -> None:
        super().__init__(model, num_classes)
        self.steps = steps
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, batch):
        x, y = batch
        logits = self.model(x)
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, y)
        return {"loss": loss * float("nan") if self.calls > self.steps else loss, "logits": logits}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_recipe, tmp_path):
    config = tiny_recipe("method.name=nan_after_first_epoch", "method.steps=22", "trainer.max_epochs=3")
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) in epoch 2, step 23; "
                       r"training stopped and last.ckpt \(end of epoch 1\) is kept") as info:
        train(config, run_dir=tmp_path / "nan")
    assert "\n" not in str(info.value)
    checkpoint = safe_torch_load(tmp_path / "nan" / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 20
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "results.json").exists()


def test_nan_in_the_first_epoch_promises_no_checkpoint(tiny_recipe, tmp_path):
    config = tiny_recipe("method.name=nan_after_first_epoch", "method.steps=0", "trainer.max_epochs=1")
    with pytest.raises(NonFiniteLossError, match=r"in epoch 1, step 1; .*no checkpoint was written"):
        train(config, run_dir=tmp_path / "nan")
    assert not (tmp_path / "nan" / "checkpoints" / "last.ckpt").exists()


def test_corrupt_checkpoint_is_named(tiny_recipe, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_recipe("trainer.max_epochs=1"), run_dir=run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(LeannetError, match=f"cannot read checkpoint {last}"):
        resume(run_dir, ["trainer.max_epochs=2"])
    with pytest.raises(LeannetError, match="cannot read checkpoint"):
        load_trained(run_dir, "last")
    config, built = load_trained(run_dir, "best")
    assert config.name == "tiny" and built.method.num_classes == 10


def test_incompatible_checkpoint_is_explained(tiny_recipe, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_recipe("trainer.max_epochs=1"), run_dir=run_dir)
    config_path = run_dir / "config.yaml"
    config_path.write_text(config_path.read_text().replace("name: resnet8", "name: resnet14"))
    with pytest.raises(LeannetError, match="does not match the run's config"):
        load_trained(run_dir, "last")


def test_resume_without_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeannetError, match="config file not found|nothing to resume"):
        resume(tmp_path / "empty")


TIMES = ("train_seconds", "epoch_seconds", "images_per_s")


def test_resume_of_a_copied_run_gives_the_same_files(tiny_recipe, tmp_path):
    # lr 0 on a model without BN: validation accuracy never improves, so best.ckpt must stay epoch 0
    config = tiny_recipe("trainer.max_epochs=2", "optim.lr=0.0", "model.name=mlp")
    train(config, run_dir=tmp_path / "here")
    import shutil

    shutil.copytree(tmp_path / "here", tmp_path / "elsewhere" / "copy")
    for run_dir in (tmp_path / "here", tmp_path / "elsewhere" / "copy"):
        resume(run_dir, ["trainer.max_epochs=3"])
    here, copy = tmp_path / "here", tmp_path / "elsewhere" / "copy"
    for run_dir in (here, copy):
        assert safe_torch_load(run_dir / "checkpoints" / "best.ckpt")["epoch"] == 0, run_dir
    a, b = (json.loads((d / "results.json").read_text()) for d in (here, copy))
    assert {k: v for k, v in a.items() if k not in TIMES} == {k: v for k, v in b.items() if k not in TIMES}


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"{path} holds {name}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_validation_stops_before_a_checkpoint(tiny_recipe, tmp_path):
    # one step per epoch at lr 1e9: the training loss of that step is finite, the weights after it are not
    config = tiny_recipe("optim.lr=1e9", "trainer.limit_train_batches=0.05", "trainer.max_epochs=1")
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* after epoch 1; training stopped and no checkpoint "
                       r"was written; lower optim.lr or check the data") as info:
        train(config, run_dir=tmp_path / "nan")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "nan" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "nan" / "results.json").exists()


def test_results_files_are_strict_json(tmp_path):
    from leannet.runio import write_json

    write_json(tmp_path / "r.json", {"test_acc": 0.5, "test_loss": float("nan"), "rows": [{"x": float("inf")}]})
    saved = _strict_json(tmp_path / "r.json")
    assert saved["test_acc"] == 0.5 and saved["test_loss"] is None and saved["rows"][0]["x"] is None
    assert saved["non_finite"] == {"test_loss": "nan", "rows.0.x": "inf"}


def test_ctrl_c_before_the_first_checkpoint_claims_none(tiny_recipe, tmp_path):
    import lightning as L

    from leannet.errors import RunInterrupted

    class CtrlC(L.Callback):
        def on_train_batch_start(self, *args):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        train(tiny_recipe(), run_dir=tmp_path / "run", callbacks=[CtrlC()])
    assert "checkpoint is kept" not in str(info.value)
    assert "before its first checkpoint" in str(info.value)
