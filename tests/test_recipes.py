"""Recipes ship as package data: found by name from any folder, listed by `leannet recipes`, in the wheel."""

import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from leannet.cli import main
from leannet.config import find_recipe, load_recipe, recipe_names
from leannet.errors import LeannetError

REPO = Path(__file__).resolve().parents[1]
SOURCE_RECIPES = sorted(str(p.relative_to(REPO / "recipes")) for p in (REPO / "recipes").rglob("*.yaml"))


def test_every_recipe_is_package_data():
    packaged = resources.files("leannet") / "recipes"
    assert (packaged / "baseline" / "fashion_mnist.yaml").is_file()
    assert recipe_names() == [name.removesuffix(".yaml") for name in SOURCE_RECIPES]


def test_names_and_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ here
    shipped = REPO / "recipes" / "byot" / "fashion_mnist.yaml"
    for name in ("byot/fashion_mnist", "byot/fashion_mnist.yaml", "recipes/byot/fashion_mnist.yaml"):
        assert find_recipe(name).read_text() == shipped.read_text(), name
    assert find_recipe("fashion_mnist").parent.name == "baseline"  # a bare name prefers baseline/
    assert find_recipe("main").parent.name == "suites"  # the one recipe of that name
    assert load_recipe("fashion_mnist").name == "fashion_mnist"
    with pytest.raises(LeannetError, match="recipe name 'cifar100' is ambiguous: give one of byot/cifar100"):
        find_recipe("cifar100")
    with pytest.raises(LeannetError, match="config file not found: nosuch; .* `leannet recipes`"):
        load_recipe("nosuch")
    (tmp_path / "fashion_mnist").write_text("seed: 3\n")  # a file here wins over a shipped name
    assert load_recipe("fashion_mnist").seed == 3


def test_leannet_recipes_lists_them(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "baseline/fashion_mnist" in lines and "suites/main" in lines


@pytest.mark.skipif(shutil.which("git") is None, reason="copies the tracked files with git")
def test_the_wheel_holds_every_recipe_and_the_rbn_kernel_source(tmp_path):
    """A wheel built from a copy of the tracked files (the checkout itself is not touched)."""
    pytest.importorskip("setuptools")
    files = subprocess.run(["git", "ls-files", "leannet", "pyproject.toml", "README.md"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            target.symlink_to(Path(REPO / name).readlink())
        else:
            shutil.copy2(REPO / name, target)
    shutil.copytree(REPO / "recipes", src / "recipes")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("leannet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.removeprefix("leannet/recipes/") for n in names if n.startswith("leannet/recipes/")) == \
        SOURCE_RECIPES
    assert "leannet/norm/rbn_cpu.c" in names  # compiled on first use
