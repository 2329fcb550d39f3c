"""Speed on a GPU, as paired ratios from one run: trainer vs a plain loop, RBN vs BN, BYOT vs baseline,
TSSL-BP vs surrogate BPTT, and the in-memory loader vs a torchvision DataLoader feeding the device.

Every step is timed with the device synchronised before and after; within a round the two sides of a
ratio run back to back (order alternating between rounds), and the median ratio over rounds is kept.
The JSON is rewritten after each benchmark, so a run cut off by its time budget keeps what it finished
(`finished`, `complete`). BENCHMARKS.md's GPU section (`leannet repro`) reads benchmarks/results/gpu.json.

    python benchmarks/gpu.py                              # CUDA, writes benchmarks/results/gpu.json
    python benchmarks/gpu.py --device cpu --smoke --out runs/gpu_smoke.json   # a seconds-long rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from leannet.config import load_recipe
from leannet.data import build_loaders
from leannet.method import build_method
from leannet.models import build_model
from leannet.train.run import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "baseline" / "fashion_mnist.yaml"
DEFAULT_OUT = Path("benchmarks/results/gpu.json")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of `fn`, over `steps` calls after one warm-up call, the device synchronised."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def paired(a: Callable[[], None], b: Callable[[], None], steps: int, rounds: int, device: torch.device) -> dict:
    """Seconds per step of `a` and `b` in alternating order per round; ratio b / a per round and its median."""
    times: dict[str, list[float]] = {"a": [], "b": []}
    for r in range(rounds):
        for key, fn in (("a", a), ("b", b)) if r % 2 == 0 else (("b", b), ("a", a)):
            times[key].append(timed(fn, steps, device))
    ratios = [tb / ta for ta, tb in zip(times["a"], times["b"], strict=True)]
    return {"a_ms": 1e3 * statistics.median(times["a"]), "b_ms": 1e3 * statistics.median(times["b"]),
            "ratio_median": statistics.median(ratios), "ratios": ratios}


def step_fn(method: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], lr: float = 0.05) -> Callable[[], None]:
    """One training step as the trainer takes it: forward, loss, backward, SGD step, the method's after_step."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    method.train()

    def step() -> None:
        loss = method(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step()

    return step


def method_on(device: torch.device, model: str, method: dict, norm: str = "bn", width: float = 1.0,
              **args: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(model, num_classes=10, in_channels=1, norm=norm, width=width, **args)
    return build_method(method, net, 10, input_shape=(1, 28, 28)).to(device)


def fake_batch(n: int, device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    x = x.to(device)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y.to(device)


def bench_rbn(device: torch.device, s: dict) -> dict:
    batch = fake_batch(s["batch"], device, channels_last=True)
    bn, rbn = (method_on(device, s["resnet"], {"name": "ce"}, norm=n).to(memory_format=torch.channels_last)
               for n in ("bn", "rbn"))
    return {"model": s["resnet"], "batch": s["batch"], "a": "bn", "b": "rbn",
            **paired(step_fn(bn, batch), step_fn(rbn, batch), s["steps"], s["rounds"], device)}


def bench_byot(device: torch.device, s: dict) -> dict:
    batch = fake_batch(s["batch"], device, channels_last=True)
    base, byot = (method_on(device, s["resnet"], {"name": m}).to(memory_format=torch.channels_last)
                  for m in ("ce", "byot"))
    return {"model": s["resnet"], "batch": s["batch"], "a": "ce", "b": "byot",
            **paired(step_fn(base, batch), step_fn(byot, batch), s["steps"], s["rounds"], device)}


def bench_spiking(device: torch.device, s: dict) -> dict:
    batch = fake_batch(s["snn_batch"], device)
    surrogate, tssl = (method_on(device, s["snn"], {"name": "snn_kernel", "rule": rule}, norm="none", steps=5)
                       for rule in ("surrogate", "tssl"))
    return {"model": s["snn"], "batch": s["snn_batch"], "steps_T": 5, "a": "surrogate", "b": "tssl",
            **paired(step_fn(surrogate, batch), step_fn(tssl, batch), s["steps"], s["rounds"], device)}


def plain_rate(config: Any, device: torch.device, batches: int, epochs: int) -> float:
    """Images/s of the last epoch of a textbook loop on `device` (same model, optimizer and loader)."""
    from leannet.train.optim import build_optimizer, build_schedule

    torch.manual_seed(config.seed)
    loaders = build_loaders(config.data.name, batch_size=config.data.batch_size, val_size=0,
                            augment=config.data.augment, seed=config.seed)
    info = loaders.info
    model = build_model(config.model.name, info.num_classes, info.in_channels).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, config.optim)
    sched = build_schedule(opt, config.schedule, batches, epochs)
    rate = 0.0
    for epoch in range(epochs):
        loaders.train.set_epoch(epoch)
        model.train()
        images, start = 0, time.perf_counter()
        for step, (x, y) in enumerate(loaders.train):
            if step == batches:
                break
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += y.shape[0]
        sync(device)
        rate = images / (time.perf_counter() - start)
    return rate


def leannet_rate(config: Any) -> float:
    """Images/s of leannet's last training epoch, as its EpochMonitor measured it."""
    with tempfile.TemporaryDirectory() as tmp:
        train(config, run_dir=Path(tmp) / "run")
        rows = (Path(tmp) / "run" / "metrics.csv").read_text().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        return float(last[header.index("train/images_per_s")])


def bench_trainer(device: torch.device, s: dict) -> dict:
    accelerator = "gpu" if device.type == "cuda" else device.type
    config = load_recipe(RECIPE, [
        f"model.name={s['resnet']}", "trainer.max_epochs=2", "trainer.progress=none", "data.val_size=0",
        f"trainer.limit_train_batches={s['batches']}", f"trainer.accelerator={accelerator}",
        f"data.batch_size={s['batch']}"])
    plain, lean = [], []
    for _ in range(max(1, s["rounds"] // 2)):
        plain.append(plain_rate(config, device, s["batches"], 2))
        lean.append(leannet_rate(config))
    ratios = [b / a for a, b in zip(plain, lean, strict=True)]
    return {"model": s["resnet"], "batch": s["batch"], "batches": s["batches"],
            "plain_images_per_s": statistics.median(plain), "leannet_images_per_s": statistics.median(lean),
            "ratio_median": statistics.median(ratios), "ratios": ratios}


def bench_loader(device: torch.device, s: dict) -> dict:
    """Images/s delivered onto `device` by one pass: TensorLoader vs torchvision DataLoader (0 and 4 workers)."""
    configs = [("tensor", 0), ("torch", 0), ("torch", s["workers"])]
    loaders = {c: build_loaders("fashion_mnist", batch_size=s["batch"], augment="crop_flip", loader=c[0],
                                num_workers=c[1]).train for c in configs}

    def rate(loader: Any) -> float:
        images, start = 0, time.perf_counter()
        for step, (x, y) in enumerate(loader):
            if step == s["loader_batches"]:
                break
            x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            images += len(y)
        sync(device)
        return images / (time.perf_counter() - start)

    rates: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for _ in range(max(1, s["rounds"] // 2)):
        for c, loader in loaders.items():
            rates[c].append(rate(loader))
    best = {f"{kind}_{workers}": max(r) for (kind, workers), r in rates.items()}
    torch_best = max(v for k, v in best.items() if k.startswith("torch"))
    return {"batch": s["batch"], "augment": "crop_flip", "images_per_s": best,
            "speedup_vs_torch_best": best["tensor_0"] / torch_best}


BENCHMARKS: dict[str, Callable[[torch.device, dict], dict]] = {
    "rbn": bench_rbn, "byot": bench_byot, "spiking": bench_spiking, "trainer": bench_trainer, "loader": bench_loader,
}
SIZES = {  # full: an H200 run of about two minutes; smoke: seconds on one CPU core
    "full": {"resnet": "resnet20", "batch": 256, "steps": 20, "rounds": 5, "batches": 100,
             "snn": "snn_32C5-P2-64C5-P2-1024", "snn_batch": 50, "workers": 4, "loader_batches": 10**9},
    "smoke": {"resnet": "resnet8", "batch": 16, "steps": 1, "rounds": 2, "batches": 2, "snn": "snn_4C5-P2-16",
              "snn_batch": 4, "workers": 2, "loader_batches": 3},
}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--budget-s", type=float, default=0, help="start no benchmark after this many seconds")
    parser.add_argument("--out", type=Path, help=f"default {DEFAULT_OUT} on CUDA (never for --smoke)")
    parser.add_argument("--note", default="", help="how the machine was shared, kept in the JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    out = args.out or (DEFAULT_OUT if device.type == "cuda" and not args.smoke else Path("runs/gpu_bench.json"))
    sizes = SIZES["smoke" if args.smoke else "full"]
    torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"device": machine(device), "torch": torch.__version__, "smoke": args.smoke,
                              "sizes": sizes, "cpus": os.cpu_count(), "note": args.note, "finished": [],
                              "complete": False}
    start = time.perf_counter()
    names = args.only or list(BENCHMARKS)
    for name in names:
        if args.budget_s and time.perf_counter() - start > args.budget_s:
            print(f"{name}: skipped (time budget {args.budget_s:.0f} s spent)", flush=True)
            continue
        t = time.perf_counter()
        result[name] = BENCHMARKS[name](device, sizes)
        result[name]["seconds"] = time.perf_counter() - t
        result["finished"].append(name)
        result["complete"] = len(result["finished"]) == len(names)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # after each: a cut-off run keeps what it finished
        ratio = result[name].get("ratio_median", result[name].get("speedup_vs_torch_best"))
        print(f"{name}: {ratio:.3f} ({result[name]['seconds']:.1f} s)", flush=True)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
