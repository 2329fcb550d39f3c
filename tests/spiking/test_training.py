"""A short spiking-CNN training run on Fashion-MNIST through the ordinary trainer learns."""

from __future__ import annotations

import pytest

from leannet.config import load_recipe
from leannet.train import train


@pytest.mark.fashion
@pytest.mark.parametrize("rule", ["tssl"])
def test_small_spiking_cnn_learns_fashion_mnist(tmp_path, rule):
    config = load_recipe("recipes/spiking/fashion_mnist_cnn.yaml", [
        f"out_dir={tmp_path}", "name=cnn", "model.name=snn_8C5-P2-16C5-P2-64", "data.few_shot=100",
        "data.val_size=500", "data.batch_size=20", "data.eval_batch_size=1000", "trainer.max_epochs=2",
        f"method.rule={rule}", "trainer.progress=none", "trainer.accelerator=cpu", "optim.lr=1.0e-3",
    ])
    results = train(config)
    assert results["test_acc"] > 0.35  # chance is 0.10; ~0.45-0.55 after these 100 steps
    rows = (tmp_path / "cnn" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "train/firing_rate" in header and "train/silent_fraction" in header and "train/rate/0" in header
