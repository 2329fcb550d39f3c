"""The tiny training runs the CUDA tests parametrize over, one per registered technique.

A case is a list of recipe overrides on top of `BASE` (a 2-step run of a narrow ResNet-8 on 100
Fashion-MNIST images). Methods, norms and freeze modes come from their registries, so a newly
registered one is covered by the default case (`method.name=<it>`, ...); a technique that needs more
(a teacher, a spiking model, dense multi-task data) adds its overrides to `METHOD_NEEDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leannet.method import METHODS
from leannet.models.norms import NORMS
from leannet.norm.bn_only import FREEZE_MODES

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "baseline" / "fashion_mnist.yaml"
BASE = ["name=case", "data.few_shot=10", "data.val_size=20", "data.batch_size=25", "data.eval_batch_size=1000",
        "model.name=resnet8", "model.width=0.5", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.progress=none", "trainer.channels_last=false", "schedule.name=constant", "optim.lr=0.05"]
TEACHER = "{teacher}"  # replaced by the folder of a finished `ce` run (see `needs_teacher`)
SNN_MLP = ["model.name=snn_64", "model.norm=none", "model.args={steps: 5}", "optim.name=adamw", "optim.lr=5e-4"]
SNN_CNN = ["model.name=snn_8C5-P2-16C5-P2-64", "model.norm=none", "model.args={steps: 5}", "optim.name=adamw",
           "optim.lr=5e-4"]
SCENES = ["data.name=scenes_tasks", "data.val_size=20", "data.batch_size=10", "data.eval_batch_size=50",
          "data.augment=none", "data.few_shot=null",
          "data.args={size: 32, train_count: 60, test_count: 20, scene_seed: 0, tasks: [segmentation, depth]}",
          "model.name=adashare_resnet",
          "model.args={widths: [8, 16], blocks: [1, 1], strides: [1, 2], head_dilations: [1, 2]}",
          "optim.name=adamw", "optim.lr=1e-3"]
SEARCH = ["method.warmup_epochs=1", "method.search_epochs=1"]
METHOD_NEEDS: dict[str, list[str]] = {
    "kd": [f"method.teacher={TEACHER}"],
    "snn_kernel": SNN_CNN,
    "snn_count": SNN_MLP,
    "multitask": SCENES,
    "adashare_search": [*SCENES, *SEARCH, "trainer.max_epochs=3"],
    "adashare": [*SCENES, *SEARCH],
}


def method_cases() -> dict[str, list[str]]:
    """`method/<name>` -> overrides, for every registered method (but those registered by test modules)."""
    return {f"method/{name}": [f"method.name={name}", *METHOD_NEEDS.get(name, [])] for name in METHODS.names()
            if not METHODS.get(name).__module__.rsplit(".", 1)[-1].startswith("test_")}


def norm_cases() -> dict[str, list[str]]:
    """`norm/<name>` -> overrides, for every registered norm."""
    return {f"norm/{name}": [f"model.norm={name}"] for name in NORMS.names()}


def freeze_cases() -> dict[str, list[str]]:
    """`freeze/<mode>` -> overrides, for every registered freeze mode (BatchNorm-only training and its baselines)."""
    return {f"freeze/{mode}": [f"freeze.mode={mode}"] for mode in FREEZE_MODES.names()}


def other_cases() -> dict[str, list[str]]:
    """Knowledge Evolution (two generations, KELS and WELS), the spiking MLP with the surrogate rule, RBN + BYOT."""
    return {
        "ke/kels": ["evolve.generations=2", "evolve.split=kels"],
        "ke/wels": ["evolve.generations=2", "evolve.split=wels"],
        "spiking/surrogate": [*SNN_MLP, "method.name=snn_kernel", "method.rule=surrogate"],
        "compose/rbn_byot": ["model.norm=rbn", "method.name=byot"],
    }


def all_cases() -> dict[str, list[str]]:
    return method_cases() | norm_cases() | freeze_cases() | other_cases()


def needs_teacher(overrides: list[str]) -> bool:
    return any(TEACHER in o for o in overrides)


def train_case(overrides: list[str], out_dir: Path, accelerator: str, precision: str) -> dict[str, Any]:
    """Train one case on `accelerator` ("cuda" or "cpu") at `precision`; returns its results.json."""
    from leannet.config import load_recipe
    from leannet.train.run import train

    common = [*BASE, f"out_dir={out_dir}", f"trainer.accelerator={accelerator}", f"trainer.precision={precision}"]
    if needs_teacher(overrides):
        teacher = train(load_recipe(RECIPE, [*common, "name=teacher", "method.name=ce"]))
        overrides = [o.replace(TEACHER, str(out_dir / "teacher")) for o in overrides]
        assert teacher["epochs"] == 1
    return train(load_recipe(RECIPE, [*common, *overrides]))
