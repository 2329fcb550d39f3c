"""BYOT analyses on trained run directories (Zhang et al., ICCV 2019; leannet issue 5).

Reads the suite `recipes/byot/suite_fashion_mnist.yaml` (variants `baseline` and `byot`, several seeds)
and writes to `--out` (default results/byot/):

- `accuracy.md/json`: final-epoch test accuracy of every exit and the ensemble, mean ± std over seeds;
- `cost.json`: MACs per image of each exit (`SelfDistillation.exit_at(k)`, torch's FlopCounterMode) and
  measured latency per image (batch 1 and batch 256, median of rounds alternating the exits);
- `dynamic_exit.json/png`: accuracy vs average MACs of confidence-based early exit over thresholds;
- `weight_noise.json/png`: deepest-classifier test accuracy when Gaussian noise of relative scale σ is
  added to every conv/linear weight (w + σ·std(w)·ε), BYOT vs baseline (flatness, as in the review);
- `timing.json` (`--time`): paired training time per batch, BYOT / baseline, alternating rounds in one process.

    python benchmarks/byot.py --runs runs/byot_fmnist --time
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

from leannet.config import load_recipe
from leannet.distill.byot import count_macs, dynamic_exit_curve
from leannet.report.table import mean_std
from leannet.train.optim import build_optimizer
from leannet.train.run import build, load_trained

THRESHOLDS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.01]
SIGMAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]


def _pct(v: tuple[float, float]) -> str:
    return f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"


def runs_of(root: Path, variant: str) -> list[Path]:
    return sorted(p.parent for p in (root / variant).glob("seed*/results.json"))


def accuracy_table(root: Path) -> dict:
    """Final-epoch test accuracies from results.json: baseline vs every BYOT exit and the ensemble."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for variant in ("baseline", "byot"):
        results = [json.loads((r / "results.json").read_text()) for r in runs_of(root, variant)]
        if not results:
            continue
        keys = ["test_acc", *[k for k in results[0] if k.startswith("test_acc_") and k != "test_acc_at_best_val"]]
        table[variant] = {k: mean_std([r[k] for r in results]) for k in keys}
        table[variant]["epoch_seconds"] = mean_std([r["epoch_seconds"] for r in results])
        table[variant]["seeds"] = (len(results), 0.0)
    return table


@torch.no_grad()
def collect_logits(run_dir: Path, limit: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor, object]:
    """Every classifier's test logits (shallowest first, deepest last) of a trained run, and the labels."""
    config, built = load_trained(run_dir, "last")
    method = built.method.eval()
    outs, labels, seen = [], [], 0
    for x, y in built.loaders.test:
        if config.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        named = method.eval_logits(x)
        exits = [v for k, v in named.items() if k.startswith("exit")] or [named[""]]
        outs.append(exits)
        labels.append(y)
        seen += y.shape[0]
        if limit and seen >= limit:
            break
    logits = [torch.cat([o[k] for o in outs]) for k in range(len(outs[0]))]
    return logits, torch.cat(labels), built


def exit_costs(method, x: torch.Tensor, rounds: int = 5, reps: int = 20) -> dict:  # noqa: ANN001
    """MACs and latency per image of each exit; the sequential cost of a dynamic exit at k."""
    net = method.net.eval()
    exits = [net.exit_at(k) for k in range(1, net.num_exits + 1)]
    macs = [count_macs(e, x[:1]) for e in exits]
    classifier_macs = []  # the shallow classifiers alone, on their exit's features
    with torch.no_grad():
        feats = net._run(x[:1])[1]
        for name, clf in zip(net.exit_names, net.classifiers, strict=True):
            classifier_macs.append(count_macs(clf, feats[name]))
    sequential = [macs[k] + sum(classifier_macs[:k]) for k in range(len(macs))]
    latency: dict[str, list[list[float]]] = {"batch1": [[] for _ in exits], "batch256": [[] for _ in exits]}
    batch = x[:256]
    with torch.no_grad():
        for e in exits:  # warm-up
            e(x[:1])
            e(batch)
        for _ in range(rounds):
            for k, e in enumerate(exits):
                start = time.perf_counter()
                for _ in range(reps):
                    e(x[:1])
                latency["batch1"][k].append((time.perf_counter() - start) / reps)
                start = time.perf_counter()
                e(batch)
                latency["batch256"][k].append((time.perf_counter() - start) / batch.shape[0])
    return {
        "macs": macs, "classifier_macs": classifier_macs, "sequential_macs": sequential,
        "latency_ms_batch1": [1e3 * statistics.median(v) for v in latency["batch1"]],
        "latency_ms_per_image_batch256": [1e3 * statistics.median(v) for v in latency["batch256"]],
    }


@torch.no_grad()
def weight_noise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigmas: list[float], draws: int,
                 channels_last: bool) -> list[dict]:
    """Accuracy of `model` with w + σ·std(w)·ε on every ≥2-D weight (BN statistics and vectors kept)."""
    rows = []
    for sigma in sigmas:
        accs, losses = [], []
        for d in range(draws if sigma > 0 else 1):
            gen = torch.Generator().manual_seed(1000 * d + 7)
            noisy = copy.deepcopy(model).eval()
            for p in noisy.parameters():
                if p.ndim >= 2:
                    p.add_(sigma * p.std() * torch.randn(p.shape, generator=gen).to(p.dtype).reshape(p.shape))
            if channels_last:
                noisy = noisy.to(memory_format=torch.channels_last)
            logits = torch.cat([noisy(x[i:i + 500]) for i in range(0, len(x), 500)])
            accs.append((logits.argmax(1) == y).float().mean().item())
            losses.append(torch.nn.functional.cross_entropy(logits.float(), y).item())
        rows.append({"sigma": sigma, "acc_mean": statistics.fmean(accs), "accs": accs,
                     "loss_mean": statistics.fmean(losses), "losses": losses})
    return rows


def paired_timing(rounds: int, batches: int) -> dict:
    """Training time per batch of BYOT / baseline (ResNet-20, the suite's data), alternating rounds."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "byot" / "fashion_mnist.yaml"
    methods = {}
    for name in ("baseline", "byot"):
        config = _ce_config(recipe) if name == "baseline" else load_recipe(recipe)
        built = build(config)
        methods[name] = (built.method.train(), build_optimizer(built.method, config.optim), built.loaders.train)
    batches_list = []
    for i, (x, y) in enumerate(methods["byot"][2]):
        batches_list.append((x.contiguous(memory_format=torch.channels_last), y))
        if i + 1 == batches:
            break
    seconds: dict[str, list[float]] = {"baseline": [], "byot": []}
    cpu: dict[str, list[float]] = {"baseline": [], "byot": []}  # process CPU time: robust to other jobs' load
    for r in range(rounds + 1):  # round 0 is a warm-up
        for name in (("baseline", "byot") if r % 2 == 0 else ("byot", "baseline")):
            method, opt, _ = methods[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for x, y in batches_list:
                loss = method((x, y))["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if r:
                seconds[name].append((time.perf_counter() - start) / len(batches_list))
                cpu[name].append((time.process_time() - start_cpu) / len(batches_list))
    ratios = [b / a for a, b in zip(seconds["baseline"], seconds["byot"], strict=True)]
    cpu_ratios = [b / a for a, b in zip(cpu["baseline"], cpu["byot"], strict=True)]
    return {"rounds": rounds, "batches_per_round": len(batches_list), "batch_size": batches_list[0][1].shape[0],
            "seconds_per_batch": seconds, "ratios": ratios, "median_ratio": statistics.median(ratios),
            "min_ratio": min(ratios), "max_ratio": max(ratios),
            "cpu_seconds_per_batch": cpu, "cpu_ratios": cpu_ratios, "median_cpu_ratio": statistics.median(cpu_ratios),
            "min_cpu_ratio": min(cpu_ratios), "max_cpu_ratio": max(cpu_ratios),
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}


def _ce_config(recipe: Path):  # noqa: ANN202
    from leannet.config import merge_recipe

    config = load_recipe(recipe)
    plain = {k: v for k, v in dict(config).items() if k != "method"}
    return merge_recipe(plain, {"method": {"name": "ce"}}, source="byot benchmark baseline")


def plot_dynamic(curves: dict, static: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (seed, rows) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot([r["avg_cost"] / 1e6 for r in rows], [100 * r["accuracy"] for r in rows], "o-", ms=3, color=color,
                label=f"BYOT dynamic exit ({seed})")
        pts = static[seed]
        ax.plot([m / 1e6 for m in pts["macs"]], [100 * a for a in pts["accs"]], "s", ms=7, mfc="none", color=color,
                label=f"BYOT exits 1..N alone ({seed})")
        if pts.get("baseline_acc") is not None:
            ax.plot([pts["macs"][-1] / 1e6], [100 * pts["baseline_acc"]], "*", ms=11, color=color, mec="k",
                    label=f"baseline ({seed})")
    ax.set_xlabel("average MMACs per image")
    ax.set_ylabel("test accuracy %")
    ax.set_title("Confidence-based early exit (max softmax ≥ threshold)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_noise(noise: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant, style in (("baseline", "k--o"), ("byot", "C0-s")):
        per_seed = noise.get(variant, {})
        if not per_seed:
            continue
        sigmas = [r["sigma"] for r in next(iter(per_seed.values()))]
        accs = 100 * torch.tensor([[r["acc_mean"] for r in rows] for rows in per_seed.values()])
        for ax, values in ((axes[0], accs), (axes[1], accs - accs[:, :1])):
            std = values.std(0) if values.shape[0] > 1 else torch.zeros(values.shape[1])
            ax.errorbar(sigmas, values.mean(0), yerr=std, fmt=style, capsize=3,
                        label=f"{variant} (deepest classifier, {values.shape[0]} seeds)")
    for ax, label in ((axes[0], "test accuracy %"), (axes[1], "accuracy change from σ = 0 (points)")):
        ax.set_xlabel("relative weight-noise scale σ (w + σ·std(w)·ε)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Flatness: accuracy under Gaussian weight noise (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/byot_fmnist")
    parser.add_argument("--out", default="results/byot")
    parser.add_argument("--noise-images", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--time", action="store_true", help="also the paired training-time measurement")
    parser.add_argument("--time-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.time or args.time_only:
        timing = paired_timing(args.rounds, args.batches)
        (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
        print(f"training time per batch BYOT / baseline: wall median {timing['median_ratio']:.3f} "
              f"(range {timing['min_ratio']:.3f}–{timing['max_ratio']:.3f}), CPU time median "
              f"{timing['median_cpu_ratio']:.3f} (range {timing['min_cpu_ratio']:.3f}–{timing['max_cpu_ratio']:.3f}), "
              f"{args.rounds} paired rounds, load average {timing['load_average'][0]:.1f}")
        if args.time_only:
            return

    table = accuracy_table(root)
    (out / "accuracy.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = ["| run | seeds | output | test acc % (final epoch) |", "|---|---|---|---|"]
    for variant, row in table.items():
        for key, value in row.items():
            if key.startswith("test_acc"):
                name = "deepest (= predict)" if key == "test_acc" else key.removeprefix("test_acc_")
                lines.append(f"| {variant} | {int(row['seeds'][0])} | {name} | {_pct(value)} |")
    (out / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    curves, static, costs, noise = {}, {}, {}, {"baseline": {}, "byot": {}}
    baseline_acc = {}
    for run_dir in runs_of(root, "baseline"):
        logits, labels, built = collect_logits(run_dir)
        baseline_acc[run_dir.name] = (logits[-1].argmax(1) == labels).float().mean().item()
        x, y = _noise_set(built, args.noise_images)
        noise["baseline"][run_dir.name] = weight_noise(built.method.model, x, y, SIGMAS, args.draws, True)
    for run_dir in runs_of(root, "byot"):
        logits, labels, built = collect_logits(run_dir)
        x, y = _noise_set(built, args.noise_images)
        if not costs:  # MACs are the same for every seed; latency is measured once, on the first run
            costs = {"run": str(run_dir), **exit_costs(built.method, x)}
        cost = costs
        curves[run_dir.name] = dynamic_exit_curve(logits, labels, cost["sequential_macs"], THRESHOLDS)
        static[run_dir.name] = {"macs": cost["macs"],
                                "accs": [(z.argmax(1) == labels).float().mean().item() for z in logits],
                                "baseline_acc": baseline_acc.get(run_dir.name)}
        noise["byot"][run_dir.name] = weight_noise(built.method.net.export(), x, y, SIGMAS, args.draws, True)
    (out / "cost.json").write_text(json.dumps(costs, indent=2) + "\n")
    (out / "dynamic_exit.json").write_text(json.dumps({"curves": curves, "static": static}, indent=2) + "\n")
    (out / "weight_noise.json").write_text(json.dumps({"sigmas": SIGMAS, "draws": args.draws,
                                                       "images": args.noise_images, **noise}, indent=2) + "\n")
    plot_dynamic(curves, static, out / "dynamic_exit.png")
    plot_noise(noise, out / "weight_noise.png")
    print(json.dumps(costs, indent=1))
    for variant, per_seed in noise.items():
        for seed, rows in per_seed.items():
            print(variant, seed, " ".join(f"σ{r['sigma']}:{100 * r['acc_mean']:.1f}" for r in rows))


def _noise_set(built, n: int) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    xs, ys, seen = [], [], 0
    for x, y in built.loaders.test:
        xs.append(x)
        ys.append(y)
        seen += y.shape[0]
        if seen >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


if __name__ == "__main__":
    main()
