"""`leannet report` on a spiking run adds a firing-rate plot and a spike raster."""

from __future__ import annotations

import shutil

from leannet.config import load_recipe
from leannet.report import report
from leannet.train import train


def test_report_has_spiking_section(tmp_path):
    config = load_recipe("recipes/spiking/fashion_mnist_mlp.yaml", [
        f"out_dir={tmp_path / 'runs'}", "name=snn", "data.name=digits", "data.val_size=200",
        "model.name=snn_32", "trainer.max_epochs=2", "trainer.progress=none", "trainer.accelerator=cpu",
    ])
    train(config)
    text = report([tmp_path / "runs"], out=tmp_path / "report")
    assert "## Spiking networks" in text
    assert (tmp_path / "report" / "firing_rates.png").stat().st_size > 1000
    assert (tmp_path / "report" / "spike_raster.png").stat().st_size > 1000
    # a published copy (results.json, metrics.csv, config.yaml; no checkpoints) still gets the rate curves
    published = tmp_path / "published" / "snn" / "seed0"
    published.mkdir(parents=True)
    for name in ("results.json", "metrics.csv", "config.yaml"):
        shutil.copyfile(tmp_path / "runs" / "snn" / name, published / name)
    text = report([tmp_path / "published"], out=tmp_path / "report2")
    assert "no spike raster" in text and (tmp_path / "report2" / "firing_rates.png").stat().st_size > 1000
