"""Training speed on a shared machine: images/s quiet and beside one busy process, default vs fixed threads.

The default thread count (`trainer.threads` unset) follows the cores free when a run starts
(leannet.train.threads). This measures leannet's training images/s (ResNet-8, the second epoch, as
its EpochMonitor reports it) with the default and with 1 and 2 fixed threads, on a quiet machine and
beside one busy process (a spinning Python process this script starts and kills). Rounds alternate
the conditions so that drift of the machine hits all alike; medians are reported. The ratio row of
BENCHMARKS.md is the default's slowdown: quiet images/s ÷ busy images/s (aim ≤ 1.8). Run it with
nothing else running, or "quiet" is not quiet:

    python benchmarks/contention.py --batches 30 --rounds 3
    python benchmarks/contention.py --smoke            # a few batches, prints, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from leannet.config import load_recipe
from leannet.train import threads as auto_threads
from leannet.train.run import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "baseline" / "fashion_mnist.yaml"
SETTINGS = ("default", "1", "2")
SPIN = "while True:\n    pass\n"


def images_per_s(overrides: list[str], setting: str) -> tuple[float, int]:
    """Training images/s of the last epoch of one run, and the thread count it ran with."""
    auto_threads._chosen = None  # the default is chosen once per process: choose it afresh for this condition
    extra = [] if setting == "default" else [f"trainer.threads={setting}"]
    config = load_recipe(RECIPE, [*overrides, *extra])
    with tempfile.TemporaryDirectory() as tmp:
        train(config, run_dir=Path(tmp) / "run")
        env = json.loads((Path(tmp) / "run" / "env.json").read_text())
        rows = (Path(tmp) / "run" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    return float(last[header.index("train/images_per_s")]), env["threads"]["count"]


def measure(overrides: list[str], busy: bool) -> dict[str, tuple[float, int]]:
    """Each setting once, beside a spinning process when `busy` (started before, killed after)."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        if spinner is not None:
            time.sleep(1.0)  # let it take its core before the default looks at the machine
        return {setting: images_per_s(overrides, setting) for setting in SETTINGS}
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="training batches per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--out", help="result file (default benchmarks/results/contention.json; --smoke: none)")
    parser.add_argument("--smoke", action="store_true", help="2 batches, 1 round, MLP: checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.rounds, args.model = 2, 1, "mlp"
    out = args.out or (None if args.smoke else "benchmarks/results/contention.json")
    overrides = [f"model.name={args.model}", "trainer.max_epochs=2", "trainer.progress=none",
                 f"trainer.limit_train_batches={args.batches}", "data.val_size=0", "trainer.channels_last=true"]
    rates = {c: {s: [] for s in SETTINGS} for c in ("quiet", "busy")}
    chosen = {c: [] for c in ("quiet", "busy")}
    load = [os.getloadavg()[0]]
    for k in range(args.rounds):
        for condition in ("quiet", "busy"):
            for setting, (rate, count) in measure(overrides, condition == "busy").items():
                rates[condition][setting].append(rate)
                if setting == "default":
                    chosen[condition].append(count)
            print(f"round {k + 1} {condition}: " + "  ".join(
                f"{s} {rates[condition][s][-1]:.0f} img/s" for s in SETTINGS), flush=True)
        load.append(os.getloadavg()[0])
    median = {c: {s: statistics.median(v) for s, v in r.items()} for c, r in rates.items()}
    slowdown = {s: median["quiet"][s] / median["busy"][s] for s in SETTINGS}
    result = {
        "model": args.model, "batches": args.batches, "rounds": args.rounds, "cpu_count": os.cpu_count(),
        "images_per_s": median, "rounds_images_per_s": rates, "default_threads": chosen,
        "slowdown": slowdown,  # quiet / busy images/s: 1 = unaffected by the busy process
        "slowdown_default": slowdown["default"],
        "slowdown_rounds": [q / b for q, b in zip(rates["quiet"]["default"], rates["busy"]["default"], strict=True)],
        "load_average": load,  # 1-minute load before and after each round: other jobs make "quiet" busy
    }
    print(json.dumps(result, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
