from pathlib import Path

import pytest

from leannet.config import load_recipe, read_yaml
from leannet.errors import LeannetError

RECIPE = Path(__file__).parents[2] / "recipes" / "baseline" / "fashion_mnist.yaml"


def test_recipe_loads_with_name_from_file_and_overrides():
    config = load_recipe(RECIPE, ["optim.lr=0.05", "model.name=resnet8", "method.name=label_smoothing"])
    assert config.name == "fashion_mnist"
    assert config.optim.lr == 0.05
    assert config.model.name == "resnet8"
    assert config.method.name == "label_smoothing"
    assert config.trainer.channels_last is True


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'.*valid keys under 'optim': .*lr"),
        ("optim.lr=abc", "bad value for 'optim.lr'.*abc"),
        ("trainer.max_epochs=1.5", "bad value for 'trainer.max_epochs'"),
        ("nonsense=1", "unknown config key 'nonsense'.*valid keys: data, evolve, freeze, method"),
        ("no_equals_sign", "not key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, expected):
    with pytest.raises(LeannetError, match=expected) as info:
        load_recipe(RECIPE, [override])
    assert "\n" not in str(info.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {name: resnet20\noptim: [\n")
    with pytest.raises(LeannetError, match=r"malformed YAML in .*broken.yaml at line \d+"):
        read_yaml(path)


def test_missing_recipe_and_non_mapping(tmp_path):
    with pytest.raises(LeannetError, match="config file not found"):
        load_recipe(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(LeannetError, match="must hold a mapping"):
        load_recipe(path)


def test_unknown_key_inside_recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {name: fashion_mnist, batchsize: 3}\n")
    with pytest.raises(LeannetError, match=r"unknown config key 'data.batchsize' in .*r.yaml"):
        load_recipe(path)
