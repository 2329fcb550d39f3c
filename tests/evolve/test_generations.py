"""The generation loop end to end on tiny runs (scikit-learn digits, 8×8): run directory, masks, resume."""

import json

import lightning as L
import pytest
import torch

from leannet.config import load_recipe
from leannet.errors import LeannetError
from leannet.evolve import get_masks
from leannet.models import build_model
from leannet.report import report
from leannet.train import resume, train
from leannet.train.callbacks import safe_torch_load
from leannet.train.run import load_trained

EVOLVE = ["evolve.generations=2", "trainer.max_epochs=1"]


@pytest.fixture
def tiny_recipe(tmp_path):
    """Two generations of a narrow ResNet-8 on 200 digits images: a few seconds."""

    def make(*overrides: str):
        base = [
            f"out_dir={tmp_path / 'runs'}", "name=ke", "data.name=digits", "data.few_shot=20",
            "data.val_size=100", "data.batch_size=50", "data.augment=none", "model.name=resnet8",
            "model.width=0.5", "trainer.progress=none", "schedule.name=constant", "optim.lr=0.05",
            "trainer.accelerator=cpu", "trainer.threads=1",
        ]
        return load_recipe(None, [*base, *overrides])

    return make


def _state(path):
    return safe_torch_load(path)["state_dict"]


def test_two_generations_with_label_smoothing_and_rbn(tiny_recipe, tmp_path):
    config = tiny_recipe(*EVOLVE, "method.name=label_smoothing", "model.norm=rbn")
    results = train(config, run_dir=tmp_path / "ke")
    run = tmp_path / "ke"
    for name in ("config.yaml", "masks.pt", "metrics.csv", "results.json", "checkpoints/last.ckpt",
                 "gen1/results.json", "gen2/checkpoints/last.ckpt", "gen2/slim.json", "gen2/slim.ckpt"):
        assert (run / name).is_file(), name
    assert [g["generation"] for g in results["generations"]] == [1, 2]
    assert results["epochs"] == 2 and 0 < results["slim_macs"] < results["dense_macs"] / 3
    assert all(0.0 <= g["slim_test_acc"] <= 1.0 for g in results["generations"])
    assert json.loads((run / "results.json").read_text())["test_acc"] == results["test_acc"]
    # the masks are fixed: the same in both generations' checkpoints and masks.pt
    masks = safe_torch_load(run / "masks.pt")
    gen1, gen2 = _state(run / "gen1/checkpoints/last.ckpt"), _state(run / "gen2/checkpoints/last.ckpt")
    for name, mask in masks.items():
        key = "method.model." + name.rpartition(".")[0] + ".ke_mask_" + name.rpartition(".")[2]
        assert torch.equal(gen1[key], mask) and torch.equal(gen2[key], mask)
    # norm layers are never reset: RBN's calibration parameters carried over and trained on
    assert not torch.equal(gen1["method.model.stem.1.center_weight"], torch.zeros(4))
    # the slim network loads into the narrower leannet model (width 0.5 × sr 0.5)
    small = build_model("resnet8", num_classes=10, in_channels=1, norm="rbn", width=0.25)
    small.load_state_dict(safe_torch_load(run / "gen2/slim.ckpt")["state_dict"])
    assert "| ke | 1 | 2 |" in report([run], out=tmp_path / "report")  # leannet report
    # the top-level last.ckpt is the final dense model, loadable like any run's (leannet eval)
    _, built = load_trained(run)
    final = {k: v for k, v in gen2.items() if "ke_mask_" not in k}
    assert all(torch.equal(v, final[k]) for k, v in built.module.state_dict().items())


class CaptureStart(L.Callback):
    """Records the weights generation 2 starts from (after the re-initialisation)."""

    def __init__(self):
        self.fits = 0

    def on_fit_start(self, trainer, pl_module):
        self.fits += 1
        if self.fits == 2:
            self.start = {k: v.clone() for k, v in pl_module.method.model.state_dict().items()}
            self.masks = get_masks(pl_module.method.model)


def test_generation_two_starts_from_generation_one_with_the_reset_part_redrawn(tiny_recipe, tmp_path):
    capture = CaptureStart()
    config = tiny_recipe(*EVOLVE, "evolve.split=wels", "method.name=tfkd_reg", "evolve.reinit=kaiming_normal")
    train(config, run_dir=tmp_path / "w", callbacks=[capture])
    gen1 = {k[len("method.model."):]: v for k, v in _state(tmp_path / "w/gen1/checkpoints/last.ckpt").items()}
    for name, value in capture.start.items():
        mask = capture.masks.get(name)
        if mask is None:
            assert torch.equal(value, gen1[name]), name  # BN and masks: carried over unchanged
        else:
            assert torch.equal(value[mask], gen1[name][mask]), name
            assert not torch.equal(value[~mask], gen1[name][~mask]), name
    assert not (tmp_path / "w/gen1/slim.json").exists()  # WELS has no slim network


class CrashInGeneration(L.Callback):
    """Crashes at the start of generation `generation`'s second epoch."""

    def __init__(self, generation):
        self.generation, self.fits = generation, 0

    def on_fit_start(self, trainer, pl_module):
        self.fits += 1

    def on_train_epoch_start(self, trainer, pl_module):
        if self.fits == self.generation and trainer.current_epoch >= 1:
            raise InterruptedError("simulated crash")


def test_resume_mid_generation_gives_identical_weights(tiny_recipe, tmp_path):
    config = tiny_recipe(*EVOLVE, "trainer.max_epochs=2", "evolve.slim_eval=false")
    train(config, run_dir=tmp_path / "straight")
    with pytest.raises(InterruptedError):
        train(config, run_dir=tmp_path / "broken", callbacks=[CrashInGeneration(2)])
    assert (tmp_path / "broken/gen1/results.json").is_file()
    assert not (tmp_path / "broken/gen2/results.json").exists()
    assert safe_torch_load(tmp_path / "broken/gen2/checkpoints/last.ckpt")["epoch"] == 0
    resume(tmp_path / "broken")
    straight = _state(tmp_path / "straight/checkpoints/last.ckpt")
    resumed = _state(tmp_path / "broken/checkpoints/last.ckpt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = (tmp_path / "broken/metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # header + 2 generations × 2 epochs, no duplicate after the resume


def test_bad_evolve_config(tiny_recipe, tmp_path):
    with pytest.raises(LeannetError, match="unknown evolve.reinit 'xavier'"):
        train(tiny_recipe(*EVOLVE, "evolve.reinit=xavier"), run_dir=tmp_path / "x")
    with pytest.raises(LeannetError, match="nothing to resume"):
        train(tiny_recipe(*EVOLVE), run_dir=tmp_path / "none", resume=True)
