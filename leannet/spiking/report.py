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


def plot_firing_rates(run_dirs: list[Path], path: Path) -> Path | None:
    """Training firing rate (spikes per neuron per step) of every spiking layer, per epoch and run."""
    import matplotlib.pyplot as plt

    from leannet.train.run import epoch_metrics

    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = False
    for run_dir in run_dirs:
        rows = epoch_metrics(run_dir)
        layers = sorted({k for row in rows for k in row if k.startswith("train/rate/")}, key=lambda k: int(k[11:]))
        for key in layers:
            values = [row[key] for row in rows if key in row]
            ax.plot(range(1, len(values) + 1), values, marker=".", label=f"{run_dir.parent.name}/{run_dir.name} "
                    f"layer {key[11:]}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="epoch", ylabel="firing rate (spikes / neuron / step)", title="firing rate per spiking layer")
    ax.legend(fontsize=6)
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
    """Report section: firing-rate curves of all spiking runs and a raster of the first one."""
    runs = [r for r in run_dirs if _is_spiking(r)]
    if not runs:
        return None
    lines = ["## Spiking networks"]
    rates = plot_firing_rates(runs, out / "firing_rates.png")
    if rates:
        lines.append(f"![firing rate per layer]({rates.name})")
    raster = spike_raster(runs[0], out / "spike_raster.png")
    lines.append(f"![spike raster of {runs[0].name}]({raster.name})")
    return "\n\n".join(lines)
