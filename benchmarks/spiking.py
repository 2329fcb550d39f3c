"""TSSL-BP speed: one training step of a spiking network with TSSL-BP vs surrogate-gradient BPTT.

A training step is what the trainer does: forward over T steps, kernel loss, backward, grad-norm
clip 1, AdamW step, weight clamp. Variants on the same network and batch:

* ``tssl``: TSSL-BP (leannet's autograd.Function, vectorised backward recurrence);
* ``surrogate``: surrogate BPTT with the same fused backward;
* ``surrogate_autograd``: surrogate BPTT unrolled in plain autograd (how STBP / snnTorch-style code
  usually does it), for reference.

Rounds alternate the variant order; ratios are taken per round, the median and range reported.
The neuron's own share of the step (all LIF layers' forward+backward on the same shapes, timed in
the same round) is measured too, to show whether the loop over T dominates.

    python benchmarks/spiking.py --threads 1 --rounds 5     # Fashion-MNIST CNN, T = 5, batch 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import leannet.train  # noqa: F401  (registers the spiking models and methods)
from leannet.models import build_model
from leannet.spiking import lif_psc
from leannet.spiking.layers import LIF
from leannet.train.methods import build_method

VARIANTS = ("tssl", "surrogate", "surrogate_autograd")


def unrolled_lif(current: torch.Tensor, tau_m: float, tau_s: float, threshold: float) -> torch.Tensor:
    """The LIF/PSC neuron unrolled in autograd with a straight-through sigmoid(·/0.2) spike."""
    v = torch.zeros_like(current[0])
    a = torch.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        u = (1 - 1 / tau_m) * v + current[t]
        soft = torch.sigmoid((u - threshold) / 0.2)
        s = soft + ((u > threshold).to(u.dtype) - soft).detach()
        v = u * (1 - s)
        a = (1 - 1 / tau_s) * a + s / tau_s
        out.append(a)
    return torch.stack(out)


class UnrolledLIF(LIF):
    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return unrolled_lif(current, self.tau_m, self.tau_s, self.threshold)


def make(variant: str, spec: str, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(spec, num_classes=10, in_channels=1, image_size=28)
    if variant == "surrogate_autograd":
        for layer in model.modules():
            if hasattr(layer, "neuron"):
                layer.neuron = UnrolledLIF()
    rule = "tssl" if variant == "tssl" else "surrogate"
    method = build_method({"name": "snn_kernel", "rule": rule}, model, 10)
    return method, torch.optim.AdamW(method.parameters(), lr=5e-4)


def train_step(method: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    method((x, y))["loss"].backward()
    torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
    opt.step()
    method.after_step()


def timed(fn, steps: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def neuron_shapes(method: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [m.register_forward_pre_hook(lambda _m, inp: shapes.append(tuple(inp[0].shape)))
             for m in method.modules() if isinstance(m, LIF)]
    with torch.no_grad():
        method.model(x)
    for h in hooks:
        h.remove()
    return shapes


def neuron_time(shapes: list[tuple[int, ...]], rule: str, steps: int) -> float:
    currents = [(torch.rand(s) * 1.5).requires_grad_(True) for s in shapes]

    def run() -> None:
        for c in currents:
            (lif_psc(c, rule=rule) * 0.1).sum().backward()

    return timed(run, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="snn_32C5-P2-64C5-P2-1024")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/spiking/speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    built = {v: make(v, args.spec, 0) for v in VARIANTS}
    shapes = neuron_shapes(built["tssl"][0], x)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    neuron: dict[str, list[float]] = {"tssl": [], "surrogate": []}
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for v in order:
            method, opt = built[v]
            times[v].append(timed(lambda m=method, o=opt: train_step(m, o, x, y), args.steps))
            if v in neuron:
                neuron[v].append(neuron_time(shapes, v, args.steps))
        print(f"round {r}: " + ", ".join(f"{v} {times[v][-1]:.3f}s" for v in VARIANTS), flush=True)
    ratios = {
        f"{v}/surrogate": [a / b for a, b in zip(times[v], times["surrogate"], strict=True)]
        for v in ("tssl", "surrogate_autograd")
    }
    result = {
        "spec": args.spec, "batch": args.batch, "time_steps": 5, "threads": args.threads,
        "rounds": args.rounds, "steps_per_round": args.steps, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "load_average": os.getloadavg()[0],
        "step_seconds_median": {v: statistics.median(t) for v, t in times.items()},
        "step_seconds": times,
        "ratio_median": {k: statistics.median(r) for k, r in ratios.items()},
        "ratio_range": {k: [min(r), max(r)] for k, r in ratios.items()},
        "neuron_seconds_per_step": neuron,
        "neuron_share_of_step_median": {
            rule: statistics.median(n / t for n, t in zip(neuron[rule], times[rule], strict=True))
            for rule in neuron
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("step_seconds_median", "ratio_median", "ratio_range",
                                             "neuron_share_of_step_median")}, indent=2))


if __name__ == "__main__":
    main()
