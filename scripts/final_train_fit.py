"""How well each run of a suite fits its training data at the last epoch, from its published metrics.csv:
final train accuracy and every `train/*` loss term (e.g. `ce`, `kd`), per variant, in seed order.

    python scripts/final_train_fit.py results/distill/fewshot100 --out results/distill/fewshot100/train_fit.json

A regulariser can only help a baseline that overfits (train ≫ test accuracy); a student whose train
accuracy ends far below the baseline's underfits its loss (e.g. a KD term it cannot match).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from leannet.runio import read_metrics

KEEP = re.compile(r"^train/(acc|loss|ce|kd|reg|teacher_acc|teacher_entropy)$")


def final_fit(root: Path) -> dict[str, dict[str, list[float]]]:
    """{variant: {"seeds": [...], "train/acc": [...], ...}} from root/VARIANT/seedN/metrics.csv."""
    out: dict[str, dict[str, list[float]]] = {}
    paths = sorted(root.glob("*/seed*/metrics.csv"), key=lambda p: (p.parent.parent.name, int(p.parent.name[4:])))
    for path in paths:
        last = read_metrics(path)[-1]
        row = out.setdefault(path.parent.parent.name, {"seeds": []})
        row["seeds"].append(int(path.parent.name[4:]))
        for key, value in last.items():
            if KEEP.match(key):
                row.setdefault(key.removeprefix("train/"), []).append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fit = final_fit(args.root)
    args.out.write_text(json.dumps(fit, indent=2) + "\n")
    for variant, row in fit.items():
        print(variant, {k: round(sum(v) / len(v), 4) for k, v in row.items() if k != "seeds"})


if __name__ == "__main__":
    main()
