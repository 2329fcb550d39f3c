"""Teacher sweeps (De-KD / Re-KD as curves): the student's paired gain against the teacher's quality.

A sweep is a suite (e.g. recipes/distill/suite_teacher_sweep.yaml) whose `kd` variants name their teacher by
run directory (`method.teacher`, `{seed}` for the seed) and checkpoint (`method.teacher_checkpoint`). A
*teacher point* is one (teacher run, checkpoint) pair; every student variant of it is one KD setting (α, T).
Three steps, each re-runnable:

1. `evaluate_teachers`: each teacher point and seed, as its students see it (the student method's own
   `fit_start`, so the same BatchNorm re-estimation on the same training batches): test accuracy, accuracy on
   the student's training images and the mean entropy of softmax(logits / T) on them at every T of the sweep.
   Needs the checkpoints (runs/, never published), so the values are kept in a small committed JSON.
2. `sweep_summary`: per student variant, the paired gain over the baseline (student − baseline test accuracy of
   the same seed; mean ± std over seeds) beside its teacher's numbers, from the published results.
3. `plot_sweep` and `markdown_table`.

The pure parts (`soft_target_entropy`, `paired_gains`) are unit-tested on hand-computed values.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leannet.errors import LeannetError
from leannet.report.table import mean_std

# Quoted from ../shared/papers/tfkd.md (CIFAR-100): teacher accuracy, student baseline, student with KD.
ZOOM = (-8.0, 2.5)  # points of teacher − baseline accuracy shown in the middle panel
PAPER_POINTS = {
    "De-KD (paper, CIFAR-100): ResNet18 at 15.48 % teaches MobileNetV2": (15.48, 68.38, 70.65),
    "Re-KD (paper, CIFAR-100): MobileNetV2 teaches ResNet18": (68.38, 75.87, 77.28),
}


def soft_target_entropy(logits: Tensor, temperature: float = 1.0) -> float:
    """Mean over the batch of H(softmax(logits / T)) in nats: the entropy of the teacher's soft targets at T."""
    if not temperature > 0:
        raise LeannetError(f"temperature must be > 0, got {temperature}")
    logp = F.log_softmax(logits.double() / temperature, dim=1)
    return float(-(logp.exp() * logp).sum(dim=1).mean())


def paired_gains(student: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Per-seed differences student − baseline over the seeds both have: mean, sample std, wins, n."""
    seeds = sorted(set(student) & set(baseline))
    diffs = [student[s] - baseline[s] for s in seeds]
    if not diffs:
        return {"seeds": [], "per_seed": [], "mean": None, "std": None, "wins": 0, "n": 0}
    mean, std = mean_std(diffs)
    return {"seeds": seeds, "per_seed": diffs, "mean": mean, "std": std, "wins": sum(d > 0 for d in diffs),
            "n": len(diffs)}


@dataclass(frozen=True)
class Student:
    variant: str
    teacher: str  # the run-directory template, with {seed}
    checkpoint: str
    alpha: float
    temperature: float
    teacher_bn: str = "stored"
    multiplier: float = 1.0  # m on batch-mean KL, unless official_multiplier (the official code's m, KL ÷ K) is set
    official_multiplier: float | None = None

    @property
    def teacher_variant(self) -> str:
        """The suite variant that trains the teacher: the folder above `seed{seed}`."""
        return Path(self.teacher).parent.name

    @property
    def point(self) -> str:
        return f"{self.teacher_variant}:{self.checkpoint}:{self.teacher_bn}"

    @property
    def setting(self) -> str:
        weight = (f"official m {self.official_multiplier:g}" if self.official_multiplier is not None
                  else f"m {self.multiplier:g}")
        return f"α {self.alpha:g}, T {self.temperature:g}, {weight}"


def students(runs: list) -> list[Student]:
    """The `kd` student variants of a suite (its SuiteRuns), in suite order, one per variant."""
    found: dict[str, Student] = {}
    for run in runs:
        method = run.config.method
        if method.name != "kd" or run.variant in found:
            continue
        if not isinstance(method.get("teacher"), str) or "{seed}" not in method.teacher:
            raise LeannetError(f"variant {run.variant}: a sweep's teacher is a run directory with {{seed}}, "
                               f"got {method.get('teacher')!r}")
        found[run.variant] = Student(run.variant, method.teacher, method.get("teacher_checkpoint", "last"),
                                     float(method.alpha), float(method.temperature),
                                     method.get("teacher_bn", "stored"), float(method.get("multiplier", 1.0)),
                                     method.get("official_multiplier"))
    return list(found.values())


def point_label(model: dict[str, Any], checkpoint: str, final_epoch: int | None = None) -> str:
    """'ResNet-20, epoch 5' / 'ResNet-8 ×0.25' (final weights)."""
    name = str(model.get("name", "?"))
    label = f"ResNet-{name[6:]}" if name.startswith("resnet") and name[6:].isdigit() else name
    width = float(model.get("width", 1.0))
    if width != 1.0:
        label += f" ×{width:g}"
    if checkpoint.startswith("epoch") and checkpoint[5:].isdigit() and int(checkpoint[5:]) != final_epoch:
        label += f", epoch {int(checkpoint[5:])}"
    return label


@torch.no_grad()
def evaluate_teacher(student_config: Any, temperatures: list[float]) -> dict[str, Any]:
    """One teacher point at one seed, as the student `student_config` sees it (its method's `fit_start`:
    the same checkpoint, the same BatchNorm treatment on the same training batches), then its test accuracy,
    its accuracy on the student's (un-augmented) training images and its soft-target entropy there at each T."""
    from leannet.config import to_dict
    from leannet.data import build_loaders
    from leannet.method import METHODS
    from leannet.train.run import build

    config = METHODS.get(student_config.method.name).prepare(student_config, None)
    built = build(config)
    method = built.method
    loader = built.loaders.train
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(0)
    method.fit_start(iter(loader))  # loads the teacher, re-estimates its BN when asked, records train stats
    teacher = method.teacher
    data = config.data
    plain = build_loaders(
        data.name, root=data.root, batch_size=data.eval_batch_size, eval_batch_size=data.eval_batch_size,
        val_size=data.val_size, few_shot=data.few_shot, augment="none", seed=config.seed, **to_dict(data.args),
    )

    def logits_labels(batches) -> tuple[Tensor, Tensor]:  # noqa: ANN001
        pairs = [(teacher(x), y) for x, y in batches]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    test_logits, test_labels = logits_labels(built.loaders.test)
    train_logits, train_labels = logits_labels(plain.train)
    return {
        "test_acc": float((test_logits.argmax(1) == test_labels).float().mean()),
        "train_acc": float((train_logits.argmax(1) == train_labels).float().mean()),
        "train_images": int(train_labels.numel()),
        "entropy": {f"{t:g}": soft_target_entropy(train_logits, t) for t in temperatures},
        "bn": config.method.get("teacher_bn", "stored"),
        "fit_start": dict(method.teacher_stats),  # accuracy / entropy (T 1) on the batches the BN saw
        "checkpoint_file": teacher.source,
    }


def evaluate_teachers(suite_path: str | Path, known: dict[str, Any] | None = None, overrides: list[str] = (),
                      recompute: bool = False) -> dict[str, Any]:
    """teachers.json's content: every teacher point × seed whose checkpoint exists under the suite's out_dir
    (entries already in `known` are kept unless `recompute`)."""
    from leannet.config import to_dict
    from leannet.train.suite import load_suite

    suite, runs = load_suite(suite_path, overrides)
    sweep = students(runs)
    temperatures = sorted({1.0, *(s.temperature for s in sweep)})
    by_variant = {(run.variant, run.seed): run for run in runs}
    points = dict((known or {}).get("points", {}))
    for student in sweep:
        if student.point in points and not recompute:
            entry = points[student.point]
        else:
            teacher_run = by_variant.get((student.teacher_variant, suite.seeds[0]))
            model = to_dict(teacher_run.config.model) if teacher_run is not None else {}
            epochs = teacher_run.config.trainer.max_epochs if teacher_run is not None else None
            entry = {"teacher": student.teacher, "checkpoint": student.checkpoint, "model": model,
                     "label": point_label(model, student.checkpoint, epochs), "seeds": {}}
        points[student.point] = entry
        for seed in suite.seeds:
            key = str(seed)
            ckpt = Path(student.teacher.replace("{seed}", str(seed))) / "checkpoints" / f"{student.checkpoint}.ckpt"
            if (key in entry["seeds"] and not recompute) or not ckpt.is_file():
                continue
            run = by_variant[(student.variant, seed)]
            print(f"teacher {student.point} seed {seed} (as variant {student.variant} sees it)", flush=True)
            entry["seeds"][key] = evaluate_teacher(run.config, temperatures)
    return {"suite": str(suite_path), "temperatures": temperatures, "points": points}


def published_accuracy(results_dir: Path, variant: str, key: str = "test_acc") -> dict[int, float]:
    """seed -> `key` of every published `results_dir/variant/seedN/results.json`."""
    found = {}
    for path in sorted((results_dir / variant).glob("seed*/results.json")):
        value = json.loads(path.read_text()).get(key)
        if value is not None and path.parent.name[4:].isdigit():
            found[int(path.parent.name[4:])] = float(value)
    return found


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


def sweep_summary(suite_path: str | Path, teachers: dict[str, Any], baseline: str = "baseline",
                  overrides: list[str] = ()) -> dict[str, Any]:
    """Per student variant: its teacher point's numbers (over the seeds the student has) and the paired gain."""
    from leannet.train.suite import load_suite

    suite, runs = load_suite(suite_path, overrides)
    results_dir = Path(suite.results_dir)
    base = published_accuracy(results_dir, baseline)
    rows = []
    quality = _quality_variant(runs)
    for student in students(runs):
        acc = published_accuracy(results_dir, student.variant)
        gain = paired_gains(acc, base)
        point = teachers.get("points", {}).get(student.point, {})
        per_seed = {int(s): v for s, v in point.get("seeds", {}).items()}
        seeds = gain["seeds"] or sorted(per_seed)
        t_seeds = [s for s in seeds if s in per_seed]
        relative = [per_seed[s]["test_acc"] - base[s] for s in t_seeds if s in base]
        rows.append({
            "variant": student.variant, "point": student.point, "label": point.get("label", student.point),
            "family": "quality" if student.teacher_variant == quality else "size",
            "alpha": student.alpha, "temperature": student.temperature, "setting": student.setting,
            "student_test_acc": _stats([acc[s] for s in seeds if s in acc]),
            "gain": gain,
            "teacher_test_acc": _stats([per_seed[s]["test_acc"] for s in t_seeds]),
            "teacher_train_acc": _stats([per_seed[s]["train_acc"] for s in t_seeds]),
            "teacher_minus_baseline": _stats(relative),
            "entropy": _stats([per_seed[s]["entropy"][f"{student.temperature:g}"] for s in t_seeds]),
            "entropy_T1": _stats([per_seed[s]["entropy"]["1"] for s in t_seeds]),
        })
    return {"suite": str(suite_path), "baseline": baseline, "baseline_test_acc": _stats(list(base.values())),
            "paper_points": {k: {"teacher": v[0], "student_baseline": v[1], "student_kd": v[2]}
                             for k, v in PAPER_POINTS.items()},
            "rows": rows}


def _quality_variant(runs: list) -> str | None:
    """The teacher run with several checkpoints in the sweep (the De-KD series)."""
    counts: dict[str, set[str]] = {}
    for s in students(runs):
        counts.setdefault(s.teacher_variant, set()).add(s.checkpoint)
    best = max(counts.items(), key=lambda kv: len(kv[1]), default=(None, set()))
    return best[0] if len(best[1]) > 1 else None


def _pm(stats: dict[str, Any], scale: float = 100.0, digits: int = 2, signed: bool = False) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    sign = "+" if signed else ""
    return f"{scale * stats['mean']:{sign}.{digits}f} ± {scale * stats['std']:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The sweep as a table: one line per student variant (teacher, setting, teacher numbers, student gain)."""
    lines = [
        f"Baseline (ResNet-8 alone): {_pm(summary['baseline_test_acc'])} % test accuracy "
        f"(n {summary['baseline_test_acc']['n']}). Gain = student − baseline test accuracy of the same seed, "
        "mean ± std over seeds; teachers' numbers over the same seeds, BatchNorm statistics as the student saw them.",
        "",
        "| teacher | KD setting | teacher test acc % | teacher − baseline (points) | teacher train acc % "
        "| entropy at T 1 (nats) | soft-target entropy at the student's T | student test acc % | gain (points) "
        "| seeds better |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        gain = row["gain"]
        wins = f"{gain['wins']}/{gain['n']}" if gain["n"] else "not run yet"
        lines.append(
            f"| {row['label']} | {row['setting']} | {_pm(row['teacher_test_acc'])} "
            f"| {_pm(row['teacher_minus_baseline'], signed=True)} | {_pm(row['teacher_train_acc'])} "
            f"| {_pm(row['entropy_T1'], 1.0, 3)} | {_pm(row['entropy'], 1.0, 3)} | {_pm(row['student_test_acc'])} "
            f"| {_pm({'mean': gain['mean'], 'std': gain['std']}, signed=True)} | {wins} |")
    return "\n".join(lines) + "\n"


def plot_sweep(summary: dict[str, Any], path: Path) -> Path | None:
    """Gain (mean ± std over seeds) against teacher − baseline accuracy (left: all teachers with the paper's
    points as stars; middle: the teachers within ZOOM points of the baseline, where the sign of the gain
    changes) and against the entropy of the teacher's softmax at T 1 on the training images (right: at the
    student's T 20 every teacher is within 0.04 nats of uniform, so T 1 is what separates them). De-KD
    checkpoints are joined by a line per setting, sizes drawn as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["gain"]["n"] and r["teacher_test_acc"]["n"]]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    panels = ((axes[0], "teacher_minus_baseline", 100.0, lambda x: x < ZOOM[0]),
              (axes[1], "teacher_minus_baseline", 100.0, lambda x: ZOOM[0] <= x <= ZOOM[1]),
              (axes[2], "entropy_T1", 1.0, lambda x: False))
    colours = {}
    for (family, setting), group in itertools.groupby(
            sorted(rows, key=lambda r: (r["family"], r["setting"])), key=lambda r: (r["family"], r["setting"])):
        group = list(group)
        colour = colours.setdefault(setting, f"C{len(colours)}")
        marker, line = ("o", "-") if family == "quality" else ("s", "none")
        what = "teacher quality (checkpoints)" if family == "quality" else "teacher size"
        for ax, xkey, scale, labelled in panels:
            xs = [scale * r[xkey]["mean"] if r[xkey]["mean"] is not None else math.nan for r in group]
            xe = [scale * (r[xkey]["std"] or 0.0) for r in group]
            ys = [100 * r["gain"]["mean"] for r in group]
            ye = [100 * r["gain"]["std"] for r in group]
            ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker=marker, ls=line, color=colour, capsize=2, lw=1,
                        label=f"{what}, {setting}")
            for x, y, r in zip(xs, ys, group, strict=True):
                if labelled(x):
                    ax.annotate(r["label"].replace("ResNet-", "R").replace(", epoch ", " ep"), (x, y),
                                fontsize=6, xytext=(3, 3), textcoords="offset points", color=colour)
    for name, (teacher, student, kd) in PAPER_POINTS.items():
        axes[0].plot(teacher - student, kd - student, "k*", ms=10)
        axes[0].annotate(name.split(":")[0], (teacher - student, kd - student), fontsize=7, xytext=(5, -4),
                         textcoords="offset points")
    axes[0].axvspan(*ZOOM, color="grey", alpha=0.12, lw=0)
    axes[0].set(xlabel="teacher − student baseline test accuracy (points)",
                ylabel="student gain over the baseline (points, paired by seed)",
                title="all teachers (stars: the paper, CIFAR-100)")
    axes[1].set(xlim=ZOOM, ylim=(-9, 3.5), xlabel="teacher − student baseline test accuracy (points)",
                title=f"zoom: teachers within {-ZOOM[0]:g} points of the baseline")
    axes[2].axvline(math.log(10), color="grey", lw=0.8, ls=":")
    axes[2].set(xlabel="teacher entropy at T 1, training images (nats; ln 10 dotted)",
                title="gain vs the teacher's entropy at T 1")
    for ax in axes:
        ax.axhline(0, color="k", lw=0.8)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.axvline(0, color="grey", lw=0.8, ls=":")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
