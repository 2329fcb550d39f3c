"""Loader throughput: TensorLoader against torchvision transforms in a torch DataLoader.

Both iterate the Fashion-MNIST training split as ``build_loaders`` makes it (crop_flip augmentation,
normalisation, shuffling), producing the same float32 batches; the DataLoader path runs with 0 and
with 2 workers. Epochs alternate between the loaders so that drift of the machine's speed hits all
alike; each loader's best epoch is reported.

    python benchmarks/loader.py --epochs 3 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from leannet.data import build_loaders

CONFIGS = [("tensor", 0), ("torch", 0), ("torch", 2)]


def epoch_rate(loader) -> float:
    """Images/s of one full pass over ``loader``."""
    images, start = 0, time.perf_counter()
    for _, y in loader:
        images += len(y)
    return images / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark, print a markdown table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (best one reported)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loader.json"))
    args = parser.parse_args()

    loaders = {
        (kind, workers): build_loaders("fashion_mnist", batch_size=args.batch_size, augment="crop_flip",
                                       loader=kind, num_workers=workers).train
        for kind, workers in CONFIGS
    }
    load_before = os.getloadavg()[0]
    rates: dict[tuple[str, int], list[float]] = {config: [] for config in CONFIGS}
    for _ in range(args.epochs):
        for config, loader in loaders.items():
            rates[config].append(epoch_rate(loader))
    best = {config: max(r) for config, r in rates.items()}
    tensor = best[("tensor", 0)]
    torch_best = max(best[("torch", 0)], best[("torch", 2)])

    print(f"Fashion-MNIST train ({len(loaders[('tensor', 0)].labels):,} images), crop_flip, "
          f"batch {args.batch_size}, best of {args.epochs} epochs, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads\n")
    print("| loader | workers | images/s | TensorLoader speed-up |")
    print("|---|---:|---:|---:|")
    for (kind, workers), rate in best.items():
        print(f"| {kind} | {workers} | {rate:,.0f} | {tensor / rate:.1f}× |")
    print(f"\nTensorLoader vs the best DataLoader setting: {tensor / torch_best:.1f}× (required: ≥ 3×)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "dataset": "fashion_mnist",
        "augment": "crop_flip",
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "results": [
            {"loader": kind, "num_workers": workers, "images_per_s": best[(kind, workers)],
             "epoch_images_per_s": rates[(kind, workers)]}
            for kind, workers in CONFIGS
        ],
        "speedup_vs_torch_workers0": tensor / best[("torch", 0)],
        "speedup_vs_torch_best": tensor / torch_best,
    }, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
