"""Recipes: typed OmegaConf configs loaded from YAML plus `key=value` overrides.

The schema below is the single source of valid keys and types. Unknown keys and values of the wrong
type become one-line `LeannetError`s that name the key and list the valid ones. Technique-specific
keys under `method:` are validated against the method's own signature (see `leannet.method`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from leannet.errors import LeannetError
from leannet.plugins import absolute_spec


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: int = 5000
    val_on_test: bool = False  # the test set is evaluated every epoch as "val" (papers' best-test-epoch protocol)
    few_shot: int | None = None
    augment: str = "crop_flip"
    loader: str = "tensor"
    num_workers: int = 0
    args: dict[str, Any] = field(default_factory=dict)  # dataset options, e.g. imagefolder's image_size


@dataclass
class ModelConfig:
    name: str = "resnet20"
    norm: str = "bn"
    width: float = 1.0
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    min_lr: float = 0.0
    pct_start: float = 0.3


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    log_every_n_steps: int = 50
    tensorboard: bool = False
    progress: str = "auto"
    limit_train_batches: float | None = None
    gradient_clip_val: float | None = None  # clip the gradient norm (Lightning's gradient_clip_val)
    save_epochs: list[int] = field(default_factory=list)  # also keep checkpoints/epoch{N}.ckpt (e.g. De-KD)


@dataclass
class FreezeConfig:
    """BatchNorm-only training (leannet.norm.bn_only): which parameters train, and their initialization."""

    mode: str = "none"  # none | bn_only | bn_and_output | output_only | random_per_channel
    output: str | None = None  # module path of the output layer (default: the last nn.Linear)
    weight_init: str = "model"  # model | kaiming_fan_in
    bn_init: str = "model"  # model | uniform (γ ~ U[0,1), β = 0) | ones
    seed: int | None = None  # draws random_per_channel's entries (default: the run's seed)


@dataclass
class EvolveConfig:
    """Knowledge Evolution (leannet.evolve): train `generations` times, re-initialising the reset part."""

    generations: int = 1  # 1 = off (a normal run)
    split: str = "kels"  # kels (kernel level, gives the slim network) | wels (weight level, random)
    rate: float = 0.5  # split rate sr: fraction of each layer in the fit hypothesis
    reinit: str = "kaiming_uniform"  # kaiming_uniform (official code) | kaiming_normal (leannet's init)
    slim_eval: bool = True  # KELS: also test the slim network after every generation


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    plugins: list[str] = field(default_factory=list)  # your own techniques: .py files or modules (leannet.plugins)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "ce"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)


def packaged_recipes() -> Path:
    """The folder of the recipes shipped with leannet (package data; `recipes/` of a source checkout)."""
    return Path(str(resources.files("leannet") / "recipes"))


def recipe_names() -> list[str]:
    """Every shipped recipe as `folder/name` (what `leannet recipes` lists)."""
    root = packaged_recipes()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def find_recipe(path: str | Path) -> Path:
    """A recipe file from a path, or from a shipped recipe's name when no such file exists here.

    `recipes/byot/fashion_mnist.yaml`, `byot/fashion_mnist` and `byot/fashion_mnist.yaml` all name the
    shipped file; a bare name (`fashion_mnist`) is the one recipe of that name, or the `baseline/` one.
    Unresolvable names come back unchanged (reading them gives the "not found" error).
    """
    path = Path(path)
    if path.is_file() or path.is_absolute():
        return path
    root = packaged_recipes()
    rel = Path(*path.parts[1:]) if path.parts[:1] == ("recipes",) else path
    for candidate in (root / rel, root / rel.with_name(rel.name + ".yaml")):
        if candidate.is_file():
            return candidate
    if len(rel.parts) == 1:
        stem = rel.name.removesuffix(".yaml")
        matches = sorted(root.rglob(f"{stem}.yaml"))
        preferred = [m for m in matches if m.parent.name == "baseline"]
        if len(matches) == 1 or preferred:
            return (preferred or matches)[0]
        if matches:
            names = ", ".join(str(m.relative_to(root).with_suffix("")) for m in matches)
            raise LeannetError(f"recipe name '{stem}' is ambiguous: give one of {names}")
    return path


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file into a dict; a missing or malformed file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise LeannetError(f"config file not found: {path}; check the path or list the shipped recipes "
                           "with `leannet recipes`")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise LeannetError(f"malformed YAML in {path}{where}: {problem}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LeannetError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}")
    return data


def _explain(err: OmegaConfBaseException, source: str) -> LeannetError:
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.structured(Recipe)
        section = OmegaConf.select(node, parent) if parent else node
        valid = ", ".join(sorted(section.keys())) if isinstance(section, DictConfig) else ""
        where = f" under '{parent}'" if parent else ""
        return LeannetError(f"unknown config key '{key}' in {source}; valid keys{where}: {valid}")
    reason = str(err).splitlines()[0]
    return LeannetError(f"bad value for '{key}' in {source}: {reason}")


def parse_overrides(overrides: list[str]) -> DictConfig:
    """Turn `["optim.lr=0.05", "model.name=resnet8"]` into a config (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise LeannetError(f"override '{item}' is not key=value; write e.g. optim.lr=0.05")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise LeannetError(f"cannot parse overrides {overrides}: {str(err).splitlines()[0]}") from None


def merge_recipe(*layers: dict[str, Any] | DictConfig, source: str = "recipe") -> DictConfig:
    """Merge config layers onto the typed schema, validating keys and types."""
    config = OmegaConf.structured(Recipe)
    try:
        for layer in layers:
            config = OmegaConf.merge(config, layer)
    except OmegaConfBaseException as err:
        raise _explain(err, source) from None
    if "name" not in config.method:
        raise LeannetError(f"'method' in {source} needs a name, e.g. method: {{name: ce}}")
    return config


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> DictConfig:
    """Load a recipe YAML (or the defaults when `path` is None) and apply `key=value` overrides.

    Plug-in file paths become absolute (from the current directory): a run folder's config names them so."""
    layers: list[Any] = []
    source = "defaults"
    if path is not None:
        path = find_recipe(path)
        layers.append(read_yaml(path))
        source = str(path)
        if "name" not in layers[0]:
            layers[0]["name"] = Path(path).stem
    config = merge_recipe(*layers, source=source)
    if overrides:
        config = merge_recipe(config, parse_overrides(list(overrides)), source="command-line overrides")
    config.plugins = [absolute_spec(spec) for spec in config.plugins]  # the run folder keeps absolute paths
    return config


def to_dict(config: DictConfig) -> dict[str, Any]:
    """A plain, resolved dict of a config (for JSON, checkpoints and hashing)."""
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
