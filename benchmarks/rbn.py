"""RBN speed: forward+backward time of a ResNet-20 with RepresentativeBatchNorm2d against nn.BatchNorm2d.

Three norms in the same model, same input: ``bn`` (nn.BatchNorm2d), ``rbn`` (leannet's fused RBN) and
``rbn_stepwise`` (the paper's four steps as separate tensor operations, as the official code does).
Rounds alternate the order of the variants so that drift of the machine's speed hits all alike; the
RBN / BN ratio is taken per round and the median reported.

    python benchmarks/rbn.py --threads 1 --rounds 5            # this machine's CPU, Fashion-MNIST size
    python benchmarks/rbn.py --compile                         # the same under torch.compile (inductor)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from leannet.models import NORMS, build_model
from leannet.norm import RepresentativeBatchNorm2d, rbn_steps


class StepwiseRBN(RepresentativeBatchNorm2d):
    """RBN computed step by step (X_cm, batch norm, X_s·sigmoid(...), affine): the unfused baseline."""

    def forward(self, x: Tensor) -> Tensor:
        return rbn_steps(self, x)["output"]


def step_time(model: torch.nn.Module, x: Tensor, y: Tensor, steps: int) -> float:
    """Seconds per forward+backward (mean over ``steps``, after two warm-up steps)."""
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (inductor)")
    parser.add_argument("--out", default="benchmarks/results/rbn.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "rbn_stepwise" not in NORMS:
        NORMS.register("rbn_stepwise")(lambda c, **kw: StepwiseRBN(c, **kw))
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.image, args.image, device=args.device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    models = {}
    for norm in ("bn", "rbn", "rbn_stepwise"):
        torch.manual_seed(0)
        model = build_model(args.model, 10, in_channels=args.channels, norm=norm).to(args.device, memory_format=fmt)
        models[norm] = torch.compile(model) if args.compile else model
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            times[name].append(step_time(models[name], x, y, args.steps))
            if args.device == "cuda":
                torch.cuda.synchronize()
        print("  ".join(f"{n} {1000 * times[n][-1]:.1f} ms" for n in models), flush=True)
    ratio = {n: statistics.median(a / b for a, b in zip(times[n], times["bn"], strict=True)) for n in models}
    result = {
        "model": args.model, "batch": args.batch, "input": [args.channels, args.image, args.image],
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({args.threads} threads)",
        "channels_last": not args.no_channels_last, "compile": args.compile, "steps": args.steps,
        "ms_per_step": {n: 1000 * statistics.median(t) for n, t in times.items()},
        "ratio_to_bn_median": ratio, "times_s": times,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{args.model}, batch {args.batch}, input {result['input']}, {result['device']}, "
          f"channels_last {result['channels_last']}, compile {args.compile}\n")
    print("| norm | ms per forward+backward | ratio to BN (median of rounds) |\n|---|---|---|")
    for n in models:
        print(f"| {n} | {result['ms_per_step'][n]:.1f} | {ratio[n]:.3f} |")


if __name__ == "__main__":
    main()
