"""``python -m leannet.multitask``: run one multi-task method, compare all, or report.

    python -m leannet.multitask run recipes/multitask/scenes.yaml method=hard seed=1
    python -m leannet.multitask compare recipes/multitask/scenes.yaml --seeds 0 1 --out results/adashare
    python -m leannet.multitask report runs/multitask --out results/adashare
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leannet.errors import LeannetError


def compare(recipe: str, overrides: list[str], seeds: list[int], out: Path,
            methods: tuple[str, ...] = ("single", "hard", "adashare", "random")) -> str:
    """Per seed: single-task, hard sharing, AdaShare, and a random policy executing as many blocks per
    task as AdaShare's (``methods`` picks a subset; a random policy without AdaShare in the same call
    matches ``out/per_run/adashare-seed<N>.json``); then the report of everything in ``out/per_run``.
    Runs whose ``out/per_run/<method>-seed<N>.json`` exists are skipped (delete it to train again), so
    seeds can be added one sitting at a time."""
    from leannet.multitask.report import load_runs, write_report
    from leannet.multitask.train import load_config, run

    for seed in seeds:
        adashare = None
        for method in methods:
            published = out / "per_run" / f"{method}-seed{seed}.json"
            if published.is_file():
                print(f"{method} seed {seed}: done ({published})", flush=True)
                if method == "adashare":
                    adashare = json.loads(published.read_text())
                continue
            extra = [f"method={method}", f"seed={seed}"]
            if method == "random":
                if adashare is None:
                    previous = out / "per_run" / f"adashare-seed{seed}.json"
                    if not previous.is_file():
                        raise LeannetError(f"the random policy matches AdaShare's block counts: run adashare "
                                           f"first (missing {previous})")
                    adashare = json.loads(previous.read_text())
                counts = [adashare["executed_blocks"][t] for t in adashare["tasks"]]
                extra.append(f"random.counts=[{','.join(map(str, counts))}]")
            result = run(load_config(recipe, [*overrides, *extra]))
            print(json.dumps({k: result[k] for k in ("method", "seed", "metrics", "params", "executed_blocks",
                                                     "seconds")}), flush=True)
            if method == "adashare":
                adashare = result
            copy = {k: v for k, v in result.items() if k != "log"}
            copy["log"] = [e for e in result["log"] if e["phase"] in ("search", "select")]
            published.parent.mkdir(parents=True, exist_ok=True)
            published.write_text(json.dumps(copy, indent=1))
    return write_report(load_runs([out / "per_run"]), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leannet.multitask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train and test one method and seed")
    p_run.add_argument("recipe")
    p_run.add_argument("overrides", nargs="*")
    p_cmp = sub.add_parser("compare", help="all methods over several seeds, then the report")
    p_cmp.add_argument("recipe")
    p_cmp.add_argument("overrides", nargs="*")
    p_cmp.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p_cmp.add_argument("--out", type=Path, default=Path("results/adashare"))
    p_cmp.add_argument("--methods", nargs="+", default=["single", "hard", "adashare", "random"],
                       choices=["single", "hard", "adashare", "random"])
    p_rep = sub.add_parser("report", help="table and policy plots from results.json files")
    p_rep.add_argument("paths", nargs="+", type=Path)
    p_rep.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from leannet.multitask.train import load_config, run

            result = run(load_config(args.recipe, args.overrides))
            print(json.dumps({k: result[k] for k in ("method", "seed", "metrics", "params", "executed_blocks")},
                             indent=1))
        elif args.command == "compare":
            print(compare(args.recipe, args.overrides, args.seeds, args.out, tuple(args.methods)))
        else:
            from leannet.multitask.report import load_runs, write_report

            print(write_report(load_runs(args.paths), args.out))
    except LeannetError as err:
        print(f"leannet: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
