"""Suites: several runs as variants of one base recipe, over seeds, run incrementally.

A suite file:

    base: ../baseline/fashion_mnist.yaml    # relative to the suite file
    out_dir: runs/main
    seeds: [0, 1]
    overrides: {trainer: {max_epochs: 3}}   # applied to every variant
    variants:
      ce: {method: {name: ce}}
      label_smoothing: {method: {name: label_smoothing, smoothing: 0.1}}

Run `variant` with seed `s` lands in `out_dir/variant/seed{s}`. Runs whose `results.json` exists are
skipped and runs with a `last.ckpt` are resumed, so a long suite can be spread over several sittings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from leannet.config import load_recipe, merge_recipe, parse_overrides, read_yaml
from leannet.errors import LeannetError


@dataclass
class SuiteConfig:
    base: str = ""
    title: str = ""
    out_dir: str = "runs/suite"
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteRun:
    variant: str
    seed: int
    run_dir: Path
    config: DictConfig

    @property
    def done(self) -> bool:
        return (self.run_dir / "results.json").is_file()


def load_suite(path: str | Path, overrides: list[str] = ()) -> tuple[SuiteConfig, list[SuiteRun]]:
    """Expand a suite file into its runs; `overrides` (key=value) apply to every run."""
    path = Path(path)
    try:
        suite = OmegaConf.merge(OmegaConf.structured(SuiteConfig), read_yaml(path))
    except OmegaConfBaseException as err:
        raise LeannetError(
            f"bad suite file {path}: {str(err).splitlines()[0]}; valid keys: "
            f"{', '.join(SuiteConfig.__dataclass_fields__)}"
        ) from None
    if not suite.base or not suite.variants:
        raise LeannetError(f"suite file {path} needs 'base' (a recipe path) and at least one entry in 'variants'")
    base = load_recipe(path.parent / suite.base)
    cli = parse_overrides(list(overrides)) if overrides else {}
    runs = []
    for variant, changes in suite.variants.items():
        for seed in suite.seeds:
            config = merge_recipe(
                base, suite.overrides, changes or {}, {"name": variant, "seed": seed}, cli,
                source=f"{path} (variant {variant})",
            )
            runs.append(SuiteRun(variant, seed, Path(suite.out_dir) / variant / f"seed{seed}", config))
    return OmegaConf.to_object(suite), runs


def run_suite(path: str | Path, overrides: list[str] = (), dry_run: bool = False) -> list[SuiteRun]:
    """Train every run of a suite that has no results yet; returns all runs."""
    from leannet.train.run import train

    _, runs = load_suite(path, overrides)
    for k, run in enumerate(runs, 1):
        status = "done" if run.done else "resume" if (run.run_dir / "checkpoints/last.ckpt").is_file() else "new"
        print(f"[{k}/{len(runs)}] {run.variant} seed {run.seed}: {status} ({run.run_dir})", flush=True)
        if run.done or dry_run:
            continue
        train(run.config, run_dir=run.run_dir, resume=status == "resume")
    return runs
