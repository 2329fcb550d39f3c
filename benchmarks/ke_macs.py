"""Parameters and MACs of Knowledge Evolution's slim network (KELS) vs the dense one.

    PYTHONPATH=. python benchmarks/ke_macs.py            # writes results/ke/macs.json and macs.md

The paper (Taha et al. 2021): ResNet-18 at 224², split rate 0.5: 3.632 → 0.968 GOps (−73.3 %).
Counts are exact (forward hooks on every conv/linear; one image), not timed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leannet.evolve import count_macs, slim, split_masks
from leannet.models import build_model, count_parameters

# (label, model name, build kwargs, input shape)
MODELS = [
    ("ResNet-18 (torchvision, ImageNet 224²)", "tv:resnet18", {"num_classes": 1000}, (3, 224, 224)),
    ("ResNet-18 (torchvision, Flower102 224²)", "tv:resnet18", {"num_classes": 102}, (3, 224, 224)),
    ("ResNet-18 CIFAR (32²)", "resnet18_cifar", {"num_classes": 100}, (3, 32, 32)),
    ("ResNet-20 (32²)", "resnet20", {"num_classes": 10}, (3, 32, 32)),
    ("ResNet-8 ×0.5 (Fashion-MNIST 28²)", "resnet8", {"num_classes": 10, "in_channels": 1, "width": 0.5},
     (1, 28, 28)),
    ("VGG-small (Fashion-MNIST 28²)", "vgg_small", {"num_classes": 10, "in_channels": 1}, (1, 28, 28)),
]


def measure(rates: list[float]) -> list[dict]:
    rows = []
    for label, name, kwargs, shape in MODELS:
        dense = build_model(name, **kwargs)
        macs, params = count_macs(dense, shape), count_parameters(dense)
        for rate in rates:
            small = slim(dense, split_masks(dense, "kels", rate))
            slim_macs, slim_params = count_macs(small, shape), count_parameters(small)
            rows.append({
                "model": label, "name": name, "input": list(shape), "rate": rate,
                "dense_macs": macs, "slim_macs": slim_macs, "macs_change": slim_macs / macs - 1,
                "dense_params": params, "slim_params": slim_params, "params_change": slim_params / params - 1,
            })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | sr | dense MMACs | slim MMACs | MACs | dense params | slim params | params |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['rate']} | {r['dense_macs'] / 1e6:,.1f} | {r['slim_macs'] / 1e6:,.1f} | "
            f"{100 * r['macs_change']:+.1f} % | {r['dense_params']:,} | {r['slim_params']:,} | "
            f"{100 * r['params_change']:+.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--out", default="results/ke")
    args = parser.parse_args()
    rows = measure(args.rates)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "macs.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (out / "macs.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
