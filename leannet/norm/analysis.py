"""Analysis of trained norm layers: γ statistics and dead ReLUs (BN-only paper, §5) and RBN's scaling
calibration (RBN paper: per-channel standard deviation before/after calibration).

    python -m leannet.norm.analysis gamma runs/norm/bn_only --out runs/norm/bn_only/analysis
    python -m leannet.norm.analysis rbn-std runs/norm/rbn/rbn/seed0 --layer layer2.0.bn1

``gamma`` groups run directories by their name (the suite variant) and writes ``gamma.md``,
``gamma.json`` and ``gamma_hist.png``; ``rbn-std`` writes ``rbn_std.json`` and ``rbn_std.png``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.norm.bn_only import norm_layers
from leannet.norm.rbn import RepresentativeBatchNorm2d, rbn_steps

THRESHOLDS = (0.01, 0.05, 0.1)


def gamma_values(model: nn.Module) -> Tensor:
    """Every norm layer's γ (``weight``), concatenated into one vector."""
    gammas = [layer.weight.detach().float().reshape(-1) for layer in norm_layers(model) if layer.weight is not None]
    if not gammas:
        raise LeannetError(f"{type(model).__name__} has no norm layer with an affine γ")
    return torch.cat(gammas).cpu()


def gamma_summary(gammas: Tensor, thresholds: Iterable[float] = THRESHOLDS) -> dict[str, float]:
    """Fraction of |γ| below each threshold, mean |γ| and the fraction of negative γ."""
    absolute = gammas.abs()
    out = {f"frac_abs_gamma_below_{t:g}": float((absolute < t).float().mean()) for t in thresholds}
    return out | {"mean_abs_gamma": float(absolute.mean()), "frac_negative_gamma": float((gammas < 0).float().mean())}


@torch.no_grad()
def dead_relu_fraction(model: nn.Module, batches: Iterable[Tensor | tuple[Tensor, ...]]) -> dict[str, float]:
    """Fraction of ReLU outputs that are never positive over ``batches`` (e.g. the test set).

    ``units``: every (channel, position) of every ``nn.ReLU`` call; ``channels``: whole feature maps.
    A ReLU module used several times in one forward (as in basic blocks) counts once per call.
    """
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise LeannetError(f"{type(model).__name__} has no nn.ReLU module to monitor")
    calls: dict[nn.Module, int] = {}
    fired: dict[tuple[int, int], Tensor] = {}

    def reset(*_: Any) -> None:
        calls.clear()

    def record(module: nn.Module, _: Any, output: Tensor) -> None:
        slot = (id(module), calls.get(module, 0))
        calls[module] = slot[1] + 1
        positive = (output > 0).any(0)
        fired[slot] = fired[slot] | positive if slot in fired else positive

    handles = [model.register_forward_pre_hook(reset)] + [m.register_forward_hook(record) for m in relus]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(batch[0] if isinstance(batch, tuple | list) else batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    units = sum(int((~f).sum()) for f in fired.values()) / sum(f.numel() for f in fired.values())
    maps = [f.flatten(1).any(1) if f.dim() > 1 else f for f in fired.values()]
    channels = sum(int((~m).sum()) for m in maps) / sum(m.numel() for m in maps)
    return {"dead_relu_units": units, "dead_relu_channels": channels}


@torch.no_grad()
def calibration_std(layer: RepresentativeBatchNorm2d, x: Tensor) -> dict[str, Tensor]:
    """Per-channel standard deviation of RBN's features before (X_s) and after (X_cs) scaling calibration,
    for the layer's input ``x`` (the RBN paper's figure).

    ``standardized`` / ``calibrated``: std over (N, H, W); ``*_instance``: each instance's std over
    (H, W), averaged over instances (the calibration acts per instance).
    """
    steps = rbn_steps(layer, x)
    out = {}
    for key in ("standardized", "calibrated"):
        out[key] = steps[key].std(dim=(0, 2, 3)).cpu()
        out[f"{key}_instance"] = steps[key].std(dim=(2, 3)).mean(0).cpu()
    return out


def _test_batches(built: Any, limit: int | None) -> Iterable[Tensor]:
    seen = 0
    for x, _ in built.loaders.test:
        if limit is not None and seen >= limit:
            return
        yield x if limit is None else x[: limit - seen]
        seen += x.shape[0]


def analyze_gamma(run_dirs: list[Path], out: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """γ statistics and dead ReLUs of trained runs, grouped by run name (mean, std and every seed's values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leannet.report.table import find_runs, load_results, mean_std
    from leannet.train.run import load_trained

    groups: dict[str, list[dict[str, Any]]] = {}
    gammas: dict[str, list[Tensor]] = {}
    for run_dir in find_runs(run_dirs):
        results = load_results(run_dir)
        _, built = load_trained(run_dir, "last")
        model = built.method.model
        values = gamma_values(model)
        stats = gamma_summary(values) | dead_relu_fraction(model, _test_batches(built, limit))
        stats |= {"test_acc": results["test_acc"], "trainable_params": results["trainable_params"]}
        groups.setdefault(results["name"], []).append(stats)
        gammas.setdefault(results["name"], []).append(values)
        print(f"{run_dir}: " + ", ".join(f"{k}={v:.4g}" for k, v in stats.items()), flush=True)
    rows = []
    for name, runs in groups.items():
        row: dict[str, Any] = {"name": name, "seeds": len(runs), "trainable_params": runs[0]["trainable_params"]}
        for key in runs[0]:
            if key != "trainable_params":
                row[key] = mean_std([r[key] for r in runs])
        row["per_seed"] = runs
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, values in gammas.items():
        ax.hist(torch.cat(values).numpy(), bins=80, histtype="step", density=True, label=name)
    ax.set_xlabel("γ after training")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gamma_hist.png", dpi=110)
    plt.close(fig)
    keys = [*(f"frac_abs_gamma_below_{t:g}" for t in THRESHOLDS), "dead_relu_units", "dead_relu_channels", "test_acc"]
    lines = ["| run | seeds | trainable | " + " | ".join(k.replace("_", " ") + " %" for k in keys) + " |",
             "|---" * (len(keys) + 3) + "|"]
    for row in rows:
        cells = " | ".join(f"{100 * row[k][0]:.2f} ± {100 * row[k][1]:.2f}" for k in keys)
        lines.append(f"| {row['name']} | {row['seeds']} | {row['trainable_params']:,} | {cells} |")
    table = "\n".join(lines)
    (out / "gamma.md").write_text(f"# γ statistics and dead ReLUs (test set)\n\n{table}\n\n![γ](gamma_hist.png)\n")
    (out / "gamma.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table)
    return rows


def analyze_rbn_std(run_dir: Path, layer_name: str, out: Path, images: int = 512) -> dict[str, Any]:
    """Per-channel std before/after RBN's scaling calibration for one layer of a trained run (test images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leannet.train.run import load_trained

    _, built = load_trained(run_dir, "last")
    model = built.method.model.eval()
    names = [n for n, m in model.named_modules() if isinstance(m, RepresentativeBatchNorm2d)]
    if layer_name not in names:
        raise LeannetError(f"no RBN layer '{layer_name}' in {run_dir}; RBN layers: {', '.join(names[:12])} ...")
    layer = model.get_submodule(layer_name)
    captured: list[Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach()))
    with torch.no_grad():
        for x in _test_batches(built, images):
            model(x)
    handle.remove()
    std = calibration_std(layer, torch.cat(captured))

    def cv(t: Tensor) -> float:  # coefficient of variation over channels: lower = more even
        return float(t.std() / t.mean())

    result: dict[str, Any] = {"run_dir": str(run_dir), "layer": layer_name, "images": images}
    for scope, suffix in (("batch", ""), ("instance", "_instance")):
        before, after = std[f"standardized{suffix}"], std[f"calibrated{suffix}"]
        result |= {f"std_before_{scope}": before.tolist(), f"std_after_{scope}": after.tolist(),
                   f"cv_before_{scope}": cv(before), f"cv_after_{scope}": cv(after)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "rbn_std.json").write_text(json.dumps(result, indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, scope in zip(axes, ("batch", "instance"), strict=True):
        for when, label in (("before", "before scaling calibration (X_s)"), ("after", "after (X_cs)")):
            values = result[f"std_{when}_{scope}"]
            ax.plot(range(len(values)), values, "o-", ms=3, label=f"{label}, CV {result[f'cv_{when}_{scope}']:.3f}")
        ax.set_xlabel(f"channel of {layer_name}")
        ax.set_ylabel("std over N, H, W" if scope == "batch" else "per-instance std over H, W (mean)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rbn_std.png", dpi=110)
    plt.close(fig)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("std_")}, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leannet.norm.analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gamma", help="γ histogram, |γ| fractions and dead ReLUs of trained runs")
    g.add_argument("run_dirs", nargs="+", type=Path)
    g.add_argument("--out", type=Path, help="output folder (default: the first run folder)")
    g.add_argument("--images", type=int, help="use only the first N test images for dead ReLUs")
    r = sub.add_parser("rbn-std", help="per-channel std before/after RBN's scaling calibration")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--layer", default="layer2.0.bn1")
    r.add_argument("--out", type=Path, help="output folder (default: the run folder)")
    r.add_argument("--images", type=int, default=512)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if args.command == "gamma":
            analyze_gamma(args.run_dirs, args.out or args.run_dirs[0], args.images)
        else:
            analyze_rbn_std(args.run_dir, args.layer, args.out or args.run_dir, args.images)
    except LeannetError as err:
        print(f"leannet: error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
