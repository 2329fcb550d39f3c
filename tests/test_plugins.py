"""A new method from one new file: `plugins:` in a recipe loads it; nothing inside leannet changes."""

import json
import textwrap

import pytest
import torch

from leannet.cli import main
from leannet.config import load_recipe
from leannet.errors import LeannetError
from leannet.method import METHODS
from leannet.plugins import load_plugin
from leannet.train import train

PLUGIN = '''
import torch.nn.functional as F

from leannet.method import Method, register_method


@register_method("halved_ce")
class HalvedCE(Method):
    """Half the cross-entropy (a test method)."""

    def __init__(self, model, num_classes, *, factor: float = 0.5):
        super().__init__(model, num_classes)
        self.factor = factor

    def forward(self, batch):
        x, y = batch
        logits = self.model(x)
        loss = self.factor * F.cross_entropy(logits, y)
        return {"loss": loss, "logits": logits, "factor": logits.new_tensor(self.factor)}
'''


@pytest.mark.fashion
def test_a_method_in_one_new_file_trains_through_the_recipe(tmp_path, tiny_recipe):
    plugin = tmp_path / "elsewhere" / "my_method.py"
    plugin.parent.mkdir()
    plugin.write_text(textwrap.dedent(PLUGIN))
    assert "halved_ce" not in METHODS
    config = tiny_recipe("trainer.max_epochs=1", "model.name=mlp", f"plugins=[{plugin}]",
                         "method={name: halved_ce, factor: 0.25}")
    results = train(config, run_dir=tmp_path / "run")
    assert results["method"] == "halved_ce" and 0 < results["test_acc"] <= 1
    assert "train/factor" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    load_plugin(str(plugin))  # a second load is a no-op, not "registered twice"
    saved = load_recipe(tmp_path / "run" / "config.yaml")
    assert list(saved.plugins) == [str(plugin)]


def test_missing_plugins_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(LeannetError, match="plugin file not found"):
        load_plugin(str(tmp_path / "nope.py"))
    with pytest.raises(LeannetError, match="plugin module 'no_such_leannet_plugin' not found"):
        load_plugin("no_such_leannet_plugin")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"plugins": [str(tmp_path / "gone.py")], "trainer": {"max_epochs": 1}}))
    assert main(["train", str(recipe), f"out_dir={tmp_path}"]) == 2
    assert "plugin file not found" in capsys.readouterr().err


MARKER_PLUGIN = '''
from pathlib import Path

Path({marker!r}).write_text("imported")
'''


def run_folder_naming(tmp_path, plugin_text: str):
    """A run folder (config.yaml only) whose config names a plug-in file; nothing trained."""
    from omegaconf import OmegaConf

    plugin = tmp_path / "their" / "plugin.py"
    plugin.parent.mkdir()
    plugin.write_text(plugin_text)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config = load_recipe(None, ["data.name=digits", "data.val_size=100", "model.name=mlp", f"plugins=[{plugin}]"])
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    torch.save({"state_dict": {}, "epoch": 0}, run / "checkpoints" / "last.ckpt")
    return run, plugin


@pytest.mark.parametrize("argv", [["eval", "{run}"], ["train", "--resume", "{run}"],
                                  ["explain", "{run}", "--layer", "hidden.1", "--count", "10"]])
def test_a_run_folder_naming_plugins_needs_consent(tmp_path, argv, capsys):
    """eval, resume and explain of someone else's run folder import no code it names without --allow-plugins."""
    marker = tmp_path / "marker"
    run, plugin = run_folder_naming(tmp_path, MARKER_PLUGIN.format(marker=str(marker)))
    assert main([a.format(run=run) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(plugin) in err and "--allow-plugins" in err, err
    assert not marker.exists(), "the run folder's plug-in was imported"


CONSENT_PLUGIN = PLUGIN.replace("halved_ce", "consent_ce").replace("HalvedCE", "ConsentCE")


def test_eval_and_resume_with_consent_work_from_any_directory(tmp_path, monkeypatch, capsys):
    """A relative plug-in path is stored absolute in the run's config.yaml: eval elsewhere finds it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "consent_method.py").write_text(textwrap.dedent(CONSENT_PLUGIN))
    monkeypatch.chdir(work)
    tiny = ["data.name=digits", "data.val_size=100", "data.few_shot=10", "data.batch_size=50", "model.name=mlp",
            "trainer.max_epochs=1", "trainer.threads=1", "trainer.progress=none"]
    assert main(["train", "fashion_mnist", *tiny, f"out_dir={tmp_path / 'runs'}", "name=consent",
                 "plugins=[consent_method.py]", "method={name: consent_ce}"]) == 0
    run = tmp_path / "runs" / "consent"
    assert load_recipe(run / "config.yaml").plugins == [str(work / "consent_method.py")]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(run), "--allow-plugins"]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == str(run)
    assert main(["train", "--resume", str(run), "trainer.max_epochs=2", "--allow-plugins"]) == 0
