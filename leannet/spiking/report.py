"""`leannet report` section for spiking runs: per-layer firing rates over training and a spike raster."""

from __future__ import annotations

from pathlib import Path

import torch

from leannet.report.table import register_section
from leannet.spiking.layers import spiking_neurons


def _is_spiking(run_dir: Path) -> bool:
    from leannet.config import read_yaml

    config = run_dir / "config.yaml"
    return config.is_file() and str(read_yaml(config).get("model", {}).get("name", "")).startswith("snn_")


def _variant(run_dir: Path) -> str:
    return run_dir.parent.name if run_dir.name.startswith("seed") else run_dir.name


def plot_firing_rates(run_dirs: list[Path], path: Path) -> Path | None:
    """Training firing rate (spikes per neuron per step) per epoch: one panel per spiking layer, one line per
    variant (mean over its seeds, min–max band)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from leannet.runio import epoch_metrics

    series: dict[tuple[str, int], list[list[float]]] = {}
    for run_dir in run_dirs:
        rows = epoch_metrics(run_dir)
        for key in sorted({k for row in rows for k in row if k.startswith("train/rate/")}):
            values = [row[key] for row in rows if key in row]
            series.setdefault((_variant(run_dir), int(key[11:])), []).append(values)
    if not series:
        return None
    layers = sorted({layer for _, layer in series})
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.4), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers, strict=True):
        for (variant, at), runs in series.items():
            if at != layer:
                continue
            epochs = min(map(len, runs))
            values = np.array([r[:epochs] for r in runs])
            x = np.arange(1, epochs + 1)
            ax.plot(x, values.mean(0), marker=".", label=f"{variant} (n {len(runs)})")
            if len(runs) > 1:
                ax.fill_between(x, values.min(0), values.max(0), alpha=0.15)
        ax.set(title=f"spiking layer {layer}", xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("firing rate (spikes / neuron / step)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def spike_raster(run_dir: Path, path: Path, image: int = 0, neurons: int = 64) -> Path:
    """Raster of the first ``neurons`` neurons of every spiking layer for one test image."""
    import matplotlib.pyplot as plt

    from leannet.train.run import load_trained

    _, built = load_trained(run_dir)
    model = built.method.model.eval()
    layers = spiking_neurons(model)
    for _, lif in layers:
        lif.record_spikes = True
    x, y = next(iter(built.loaders.test))
    model(x[image : image + 1])
    fig, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers), 3.2), squeeze=False)
    for ax, (name, lif) in zip(axes[0], layers, strict=True):
        spikes = lif.last_spikes[:, 0].reshape(lif.last_spikes.shape[0], -1)[:, :neurons]
        steps, idx = torch.nonzero(spikes, as_tuple=True)
        ax.scatter(steps.numpy(), idx.numpy(), marker="|", s=40, color="k")
        ax.set(xlim=(-0.5, spikes.shape[0] - 0.5), ylim=(-1, spikes.shape[1]), xlabel="time step",
               title=f"{name} ({lif.last_spikes.float().mean():.2f})", ylabel="neuron")
        ax.title.set_fontsize(7)
        lif.record_spikes, lif.last_spikes = False, None
    fig.suptitle(f"{run_dir.name}: spikes for test image {image} (label {int(y[image])}); "
                 "(·) = firing rate", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@register_section
def spiking_section(run_dirs: list[Path], out: Path) -> str | None:
    """Report section: firing-rate curves of all spiking runs and a raster of the first one with checkpoints."""
    runs = [r for r in run_dirs if _is_spiking(r)]
    if not runs:
        return None
    lines = ["## Spiking networks"]
    rates = plot_firing_rates(runs, out / "firing_rates.png")
    if rates:
        lines.append(f"![firing rate per layer]({rates.name})")
    trained = [r for r in runs if (r / "checkpoints" / "last.ckpt").is_file()]  # published copies have none
    if trained:
        raster = spike_raster(trained[0], out / "spike_raster.png")
        lines.append(f"![spike raster of {trained[0].parent.name}/{trained[0].name}]({raster.name})")
    else:
        lines.append("(no spike raster: none of these runs has its checkpoints)")
    return "\n\n".join(lines)
