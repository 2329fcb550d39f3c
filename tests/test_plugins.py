"""A new method from one new file: `plugins:` in a recipe loads it; nothing inside leannet changes."""

import json
import textwrap

import pytest

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
