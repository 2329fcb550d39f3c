"""RBN speed: forward+backward time of a ResNet-20 with RepresentativeBatchNorm2d against nn.BatchNorm2d.

Four norms in the same model, same input: ``bn`` (nn.BatchNorm2d), ``rbn`` (leannet's fused RBN, on
its C kernel where it applies: float CPU tensors in channels-last layout), ``rbn_pytorch`` (the same
fused RBN on its pure-PyTorch path) and ``rbn_stepwise`` (the paper's four steps as separate tensor
operations, as the official code does).
The variants take turns step by step (the order alternating), so that a change of the machine's speed
hits all alike; the RBN / BN ratio of each round's summed step times is taken and the median reported,
with every round's ratio, the CPU-time ratio (time.process_time: not inflated by waiting for a core)
and the load average before and after.

    python benchmarks/rbn.py --threads 1 --rounds 5            # this machine's CPU, Fashion-MNIST size
    python benchmarks/rbn.py --compile                         # the same under torch.compile (inductor)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from leannet.models import NORMS, build_model
from leannet.norm import RepresentativeBatchNorm2d, cpu_kernel, rbn_steps


class StepwiseRBN(RepresentativeBatchNorm2d):
    """RBN computed step by step (X_cm, batch norm, X_s·sigmoid(...), affine): the unfused baseline."""

    def forward(self, x: Tensor) -> Tensor:
        return rbn_steps(self, x)["output"]


class PytorchPathRBN(RepresentativeBatchNorm2d):
    """The fused RBN with its C kernel switched off (the path CUDA, NCHW and torch.compile take)."""

    def forward(self, x: Tensor) -> Tensor:
        with cpu_kernel.disabled():
            return super().forward(x)


def train_step(model: torch.nn.Module, x: Tensor, y: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def measure(models: dict[str, torch.nn.Module], x: Tensor, y: Tensor, steps: int, rounds: int,
            sync: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per step of each model, per round (mean over ``steps``, after two warm-up steps)."""
    for model in models.values():
        for _ in range(2):
            train_step(model, x, y)
    wall = {name: [0.0] * rounds for name in models}
    cpu = {name: [0.0] * rounds for name in models}
    for r in range(rounds):
        for k in range(steps):
            for name in list(models) if (r * steps + k) % 2 == 0 else list(reversed(models)):
                start, start_cpu = time.perf_counter(), time.process_time()
                train_step(models[name], x, y)
                if sync:
                    torch.cuda.synchronize()
                wall[name][r] += (time.perf_counter() - start) / steps
                cpu[name][r] += (time.process_time() - start_cpu) / steps
        print("  ".join(f"{n} {1000 * wall[n][r]:.1f} ms" for n in models), flush=True)
    return wall, cpu


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
    for name, cls in (("rbn_pytorch", PytorchPathRBN), ("rbn_stepwise", StepwiseRBN)):
        if name not in NORMS:
            NORMS.register(name)(lambda c, _cls=cls, **kw: _cls(c, **kw))
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.image, args.image, device=args.device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    models = {}
    for norm in ("bn", "rbn", "rbn_pytorch", "rbn_stepwise"):
        torch.manual_seed(0)
        model = build_model(args.model, 10, in_channels=args.channels, norm=norm).to(args.device, memory_format=fmt)
        models[norm] = torch.compile(model) if args.compile else model
    load_before = os.getloadavg()[0]
    times, cpu_times = measure(models, x, y, args.steps, args.rounds, sync=args.device == "cuda")
    ratios = {n: [a / b for a, b in zip(times[n], times["bn"], strict=True)] for n in models}
    cpu_ratios = {n: [a / b for a, b in zip(cpu_times[n], cpu_times["bn"], strict=True)] for n in models}
    ratio = {n: statistics.median(r) for n, r in ratios.items()}
    result = {
        "model": args.model, "batch": args.batch, "input": [args.channels, args.image, args.image],
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({args.threads} threads)",
        "channels_last": not args.no_channels_last, "compile": args.compile, "steps": args.steps,
        "rbn_kernel": cpu_kernel.usable(x) and not args.compile,
        "ms_per_step": {n: 1000 * statistics.median(t) for n, t in times.items()},
        "ratio_to_bn_median": ratio, "ratios": ratios,
        "cpu_ratio_to_bn_median": {n: statistics.median(r) for n, r in cpu_ratios.items()},
        "load_average": [load_before, os.getloadavg()[0]], "times_s": times, "cpu_times_s": cpu_times,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{args.model}, batch {args.batch}, input {result['input']}, {result['device']}, "
          f"channels_last {result['channels_last']}, compile {args.compile}, RBN C kernel {result['rbn_kernel']}\n")
    print("| norm | ms per forward+backward | ratio to BN (median of rounds) | rounds | CPU-time ratio |\n"
          "|---|---|---|---|---|")
    for n in models:
        spread = f"{min(ratios[n]):.3f}–{max(ratios[n]):.3f}"
        print(f"| {n} | {result['ms_per_step'][n]:.1f} | {ratio[n]:.3f} | {spread} | "
              f"{result['cpu_ratio_to_bn_median'][n]:.3f} |")
    print(f"load average {load_before:.2f} before, {result['load_average'][1]:.2f} after")


if __name__ == "__main__":
    main()
