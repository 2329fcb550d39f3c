"""Diagnostic (not in the paper): slim test accuracy with the dense network's BatchNorm statistics vs
statistics re-estimated on the training images (one no-grad pass, no weight changes).

    PYTHONPATH=. python scripts/ke_slim_bn.py runs/ke/fewshot50/ke/seed0 ... --out results/ke/slim_bn_recal.json
    PYTHONPATH=. python scripts/ke_slim_bn.py runs/ke/fewshot50/ke/seed2 --append   # add a seed to the file

The slim network drops the reset part's contribution to the fit channels, so the dense running
statistics no longer describe its activations; this separates that mismatch from the weights' quality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from leannet.config import load_recipe
from leannet.data import build_loaders
from leannet.evolve import slim
from leannet.evolve.generations import accuracy, load_generation
from leannet.norm.recalibrate import reestimate_bn


def recalibrate(model: torch.nn.Module, loader) -> torch.nn.Module:  # noqa: ANN001
    """Re-estimate every norm layer's running statistics (exact average) on `loader`, in eval mode after."""
    reestimate_bn(model, (x for x, _ in loader))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/ke/slim_bn_recal.json"))
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of other runs already in --out (add seeds one sitting at a time)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    given = {str(run) for run in args.runs}
    rows = ([r for r in json.loads(args.out.read_text()) if r["run"] not in given]
            if args.append and args.out.is_file() else [])
    for run in args.runs:
        config = load_recipe(run / "config.yaml")
        d = config.data
        loaders = build_loaders(d.name, root=d.root, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                                val_size=d.val_size, few_shot=d.few_shot, augment="none", seed=config.seed)
        for k in range(1, config.evolve.generations + 1):
            small = slim(load_generation(config, run, k, loaders.info))
            raw = accuracy(small, loaders.test, torch.device("cpu"))
            recal = accuracy(recalibrate(small, loaders.train), loaders.test, torch.device("cpu"))
            rows.append({"run": str(run), "generation": k, "slim_test_acc": raw, "slim_test_acc_bn_recal": recal})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
