"""Suites: several runs as variants of one base recipe, over seeds, run incrementally.

A suite file:

    base: ../baseline/fashion_mnist.yaml    # relative to the suite file
    out_dir: runs/main
    results_dir: results/main              # optional: small result files of every run are copied here
    seeds: [0, 1]
    overrides: {trainer: {max_epochs: 3}}   # applied to every variant
    variants:
      ce: {method: {name: ce}}
      label_smoothing: {method: {name: label_smoothing, smoothing: 0.1}}

Run `variant` with seed `s` lands in `out_dir/variant/seed{s}`. Runs whose `results.json` exists are
skipped and runs with a `last.ckpt` are resumed, so a long suite can be spread over several sittings.
Running a suite writes only under `out_dir` (runs/, git-ignored): it never touches committed files.
Publishing is a separate, explicit step (`leannet publish SUITE`, or `leannet suite SUITE --publish`):
each finished run's small files (results.json, metrics.csv, config.yaml; never checkpoints) are copied
to `results_dir/variant/seed{s}/`, the layout the reproduction report reads, together with the suite's
report pages. With `reuse_published` (`leannet suite --reuse-published`), a run already published there
counts as done too, so a fresh clone with the committed `results/` trains only the missing runs (a run
that others use as a teacher needs its checkpoints, which are never published: delete its published
copy to train it again).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from leannet.config import find_recipe, load_recipe, merge_recipe, parse_overrides, read_yaml
from leannet.errors import LeannetError, RunInterrupted


@dataclass
class SuiteConfig:
    base: str = ""
    title: str = ""
    out_dir: str = "runs/suite"
    results_dir: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteRun:
    variant: str
    seed: int
    run_dir: Path
    config: DictConfig
    published_dir: Path | None = None

    @property
    def status(self) -> str:
        """done (results in run_dir), published (only a copy in results_dir), resume (a last.ckpt) or new."""
        if (self.run_dir / "results.json").is_file():
            return "done"
        if self.published_dir is not None and (self.published_dir / "results.json").is_file():
            return "published"
        return "resume" if (self.run_dir / "checkpoints" / "last.ckpt").is_file() else "new"

    @property
    def done(self) -> bool:
        return self.status in ("done", "published")

    @property
    def result_dir(self) -> Path:
        """Where this run's results.json is read from: its run directory, else its published copy."""
        return self.published_dir if self.status == "published" else self.run_dir


def load_suite(
    path: str | Path, overrides: list[str] = (), reuse_published: bool = False
) -> tuple[SuiteConfig, list[SuiteRun]]:
    """Expand a suite file into its runs; `overrides` (key=value) apply to every run; with `reuse_published`,
    runs whose copy lies in `results_dir` count as done."""
    path = find_recipe(path)  # a path, or the name of a shipped suite (e.g. suites/main)
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
            published = (Path(suite.results_dir) / variant / f"seed{seed}"
                         if suite.results_dir and reuse_published else None)
            runs.append(SuiteRun(variant, seed, Path(suite.out_dir) / variant / f"seed{seed}", config, published))
    return OmegaConf.to_object(suite), runs


PUBLISHED_FILES = ("results.json", "metrics.csv", "config.yaml", "search/policy.json")  # the last: AdaShare's
REPORT_PAGES = ("report.md", "curves.png", "firing_rates.png", "spike_raster.png")
ORDER_FILE = "suite.json"  # variant order, so `leannet report out_dir` keeps the suite's row order


def publish(run: SuiteRun, results_dir: str | Path) -> Path:
    """Copy a finished run's small result files to `results_dir/variant/seed{s}/` (no checkpoints)."""
    target = Path(results_dir) / run.variant / f"seed{run.seed}"
    target.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED_FILES:
        if (run.run_dir / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.run_dir / name, target / name)
    return target


def _select(runs: list[SuiteRun], field: str, wanted: list | None, valid: list) -> list[SuiteRun]:
    """The runs whose `field` is in `wanted` (all when None); a value the suite lacks is a one-line error."""
    if wanted is None:
        return runs
    unknown = sorted(set(wanted) - set(valid))
    if unknown:
        raise LeannetError(f"--{field}s {unknown} not in the suite; its {field}s: {', '.join(map(str, valid))}")
    return [run for run in runs if getattr(run, field) in wanted]


def run_suite(
    path: str | Path, overrides: list[str] = (), dry_run: bool = False, reuse_published: bool = False,
    seeds: list[int] | None = None, variants: list[str] | None = None,
) -> list[SuiteRun]:
    """Train every run of a suite that has no results yet, under `out_dir` only; returns all runs.

    `seeds` / `variants` keep only those of the suite's (two calls with disjoint seeds can share the cores)."""
    from leannet.train.run import train

    suite, runs = load_suite(path, overrides, reuse_published)
    runs = _select(runs, "seed", seeds, list(suite.seeds))
    runs = _select(runs, "variant", variants, list(suite.variants))
    if not dry_run:
        Path(suite.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(suite.out_dir) / ORDER_FILE).write_text(json.dumps({"variants": list(suite.variants)}) + "\n")
    for k, run in enumerate(runs, 1):
        status = run.status
        print(f"[{k}/{len(runs)}] {run.variant} seed {run.seed}: {status} ({run.result_dir})", flush=True)
        if dry_run or status in ("done", "published"):
            continue
        try:
            train(run.config, run_dir=run.run_dir, resume=status == "resume")
        except RunInterrupted as err:
            raise RunInterrupted(f"suite {path} stopped in {run.run_dir}", f"leannet suite {path}",
                                 err.exit_code, kept=err.kept) from None
    return runs


def publish_suite(path: str | Path, overrides: list[str] = ()) -> list[Path]:
    """Copy every finished run of a suite and its report pages from `out_dir` to `results_dir`.

    The one command that writes committed result files (`leannet publish SUITE`); returns the copies
    (none when no run has finished under `out_dir`).
    """
    suite, runs = load_suite(path, overrides)
    if not suite.results_dir:
        raise LeannetError(f"suite {path} has no results_dir; add `results_dir: results/NAME` to publish it")
    copies = [publish(run, suite.results_dir) for run in runs if run.status == "done"]
    for name in REPORT_PAGES if copies else ():
        page = Path(suite.out_dir) / name
        if page.is_file():
            shutil.copyfile(page, Path(suite.results_dir) / name)
            copies.append(Path(suite.results_dir) / name)
    return copies
