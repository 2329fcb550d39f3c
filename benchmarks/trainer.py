"""Trainer overhead: leannet's training images/s against a plain hand-written PyTorch loop.

Both train the same model (ResNet-20, channels_last) with the same optimizer, schedule, batch size
and in-memory loader on Fashion-MNIST; only the loop differs. Rounds alternate plain / leannet so
that drift of the machine's speed hits both alike; the ratio is taken per round and the median
reported.

    python benchmarks/trainer.py --batches 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from leannet.config import load_recipe
from leannet.data import build_loaders
from leannet.models import build_model
from leannet.train.optim import build_optimizer, build_schedule
from leannet.train.run import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "baseline" / "fashion_mnist.yaml"


def plain_loop(config, batches: int, epochs: int) -> float:
    """Images/s of the last epoch of a textbook training loop (train phase only, like leannet's)."""
    torch.manual_seed(config.seed)
    loaders = build_loaders(config.data.name, batch_size=config.data.batch_size, val_size=config.data.val_size,
                            augment=config.data.augment, seed=config.seed)
    info = loaders.info
    model = build_model(config.model.name, info.num_classes, info.in_channels, width=config.model.width)
    model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, config.optim)
    sched = build_schedule(opt, config.schedule, batches, epochs)
    rate = 0.0
    for epoch in range(epochs):
        loaders.train.set_epoch(epoch)
        model.train()
        images, start = 0, time.perf_counter()
        for step, (x, y) in enumerate(loaders.train):
            if step == batches:
                break
            x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += y.shape[0]
        rate = images / (time.perf_counter() - start)
    return rate


def leannet_loop(config, batches: int, epochs: int) -> float:
    """Images/s of leannet's last training epoch, as measured by its own EpochMonitor."""
    with tempfile.TemporaryDirectory() as tmp:
        train(config, run_dir=Path(tmp) / "run")
        rows = (Path(tmp) / "run" / "metrics.csv").read_text().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        return float(last[header.index("train/images_per_s")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100, help="training batches per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement (the last is timed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--out", default="benchmarks/results/trainer.json")
    args = parser.parse_args()
    config = load_recipe(RECIPE, [
        f"model.name={args.model}", f"trainer.max_epochs={args.epochs}", "trainer.progress=none",
        f"trainer.limit_train_batches={args.batches}", "data.val_size=0",
    ])
    plain, lean, load = [], [], [os.getloadavg()[0]]
    for _ in range(args.rounds):
        plain.append(plain_loop(config, args.batches, args.epochs))
        lean.append(leannet_loop(config, args.batches, args.epochs))
        load.append(os.getloadavg()[0])
        print(f"plain {plain[-1]:.0f} img/s   leannet {lean[-1]:.0f} img/s   ratio {lean[-1] / plain[-1]:.3f}")
    ratios = [b / a for a, b in zip(plain, lean, strict=True)]
    result = {
        "model": args.model, "batch_size": config.data.batch_size, "batches": args.batches,
        "torch_threads": torch.get_num_threads(),
        "plain_images_per_s": statistics.median(plain), "leannet_images_per_s": statistics.median(lean),
        "ratio_median": statistics.median(ratios), "ratios": ratios,
        "load_average": load,  # 1-minute load before and after each round: other jobs skew the ratio
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"| loop | images/s |\n|---|---|\n| plain PyTorch | {result['plain_images_per_s']:.0f} |\n"
          f"| leannet (Lightning) | {result['leannet_images_per_s']:.0f} |\n\n"
          f"ratio leannet / plain (median of {args.rounds} paired rounds): {result['ratio_median']:.3f}")


if __name__ == "__main__":
    main()
