"""What does the search see? Trained weights scored under several fixed policies, without re-training.

AdaShare judges a policy by the task losses of the *shared* network it is training; the final policy is then
re-trained from scratch. This probe loads finished networks (a hard-sharing run, the end of an AdaShare search,
a re-trained tree policy) and tests each under every policy given, each task's BN statistics re-estimated along
that policy's path (so a skipped block is not judged with another path's statistics). When a policy that wins
after re-training loses on the shared weights, the search's signal points the wrong way: the weights, co-adapted
to the blocks they were trained with, not the policy, decide.

    python scripts/adashare_policy_probe.py runs/multitask/conflict/{hard/seed0,adashare/seed0/search,tree/seed0} \
        --policy all=1,1,1,1,1,1,1,1,1,1,1,1/1,1,1,1,1,1,1,1,1,1,1,1 \
        --policy tree=1,1,1,1,1,1,1,1,1,1,1,1/1,1,1,1,1,1,1,1,1,0,0,0 --out results/multitask/conflict/probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from adashare_bn_check import recompute_statistics, test_metrics

from leannet.errors import LeannetError
from leannet.multitask.adashare import policy_tensor
from leannet.runio import write_json
from leannet.train.run import load_trained, quiet_lightning


def parse_policy(text: str) -> tuple[str, torch.Tensor]:
    """``name=1,1,0/1,0,0`` (one row per task, '/' between tasks) → (name, bool [K, L])."""
    name, _, rows = text.partition("=")
    try:
        execute = torch.tensor([[int(v) for v in row.split(",")] for row in rows.split("/")]).bool()
    except ValueError:
        raise LeannetError(f"--policy {text!r}: write name=1,1,0/1,1,1 (0/1 per block, '/' between tasks)") from None
    return name, execute


def probe(run_dir: Path, policies: dict[str, torch.Tensor]) -> dict[str, dict[str, dict[str, float]]]:
    """Test metrics of the run's last weights under each policy, BN statistics re-estimated along it."""
    scores = {}
    for name, execute in policies.items():
        _, built = load_trained(run_dir, "last")
        if tuple(execute.shape) != tuple(built.method.model.policy_logits.shape[:2]):
            raise LeannetError(f"policy '{name}' is {tuple(execute.shape)}; {run_dir} has "
                               f"{tuple(built.method.model.policy_logits.shape[:2])} (tasks × blocks)")
        u = policy_tensor(execute)
        built.method.eval_policy = lambda u=u: u
        recompute_statistics(built)
        scores[name] = test_metrics(built)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--policy", action="append", required=True, help="name=1,1,0/1,1,1 (repeat)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    quiet_lightning()
    policies = dict(parse_policy(p) for p in args.policy)
    rows = []
    for run_dir in args.run_dirs:
        row = {"run": str(run_dir), "policies": {n: e.int().tolist() for n, e in policies.items()},
               "test": probe(run_dir, policies)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"runs": rows, "note": "the same weights under each policy, per-task BN re-estimated"})


if __name__ == "__main__":
    main()
