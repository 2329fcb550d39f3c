"""How far a float32 training step on a device is from float64, beside the CPU's float32 (a parity-test probe).

For a narrow ResNet-8 with BN or RBN and one cross-entropy step, prints each run's loss error and its five
worst parameter-gradient errors, as ‖g − g64‖ / ‖g64‖ against a float64 CPU step, for: float32 on the CPU
(channels-last: RBN's C kernel), float32 on the device with TF32 off, and the same with deterministic cuDNN
algorithms. It tells a device's summation order (errors near the CPU's) from an algorithm or a path that
loses precision (errors orders of magnitude above it), which a CPU-vs-device tolerance alone cannot; and it counts
the ReLU inputs that fell on the other side of 0 than in float64 (one such flip moves every gradient below it
by about 1e-3, whatever the arithmetic). `LEANNET_NATIVE=0` runs the CPU's channels-last float32 step on RBN's
PyTorch path, the path CUDA takes. Then each RBN layer's own error on the device (:func:`rbn_layer_errors`),
to find the layer and the term that lose precision.

    python scripts/cuda_parity_probe.py [--device cuda] [--out probe.json]
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from leannet.method import build_method
from leannet.models import build_model
from leannet.norm.rbn import FusedRBN


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def step(method: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, dtype: torch.dtype,
         channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One training forward and backward of a copy of `method`: (loss, gradients by name, and where each
    convolution's input is exactly zero: the ReLU masks the backward used)."""
    m = copy.deepcopy(method).to(device=device, dtype=dtype).train()
    x = x.to(device=device, dtype=dtype)
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    zeros: dict[str, torch.Tensor] = {}
    for name, module in m.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _, args, __, name=name: zeros.__setitem__(name, (args[0] == 0).cpu()))
    out = m((x, y.to(device)))
    out["loss"].backward()
    return out["loss"], {n: p.grad for n, p in m.named_parameters() if p.grad is not None}, zeros


def mask_flips(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, int]:
    """Per convolution, the inputs that are zero in one run and not in the other: a ReLU whose input was
    within rounding of 0 took the other branch, and its gradient path differs by O(1), not by rounding."""
    counts = {n: int((a[n] ^ b[n]).sum()) for n in a}
    return {n: count for n, count in counts.items() if count}


def rbn_layer_errors(device: str, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Each RBN layer's own error in one float32 step on `device`: its backward's inputs (X, ∂Y and the
    parameters) are recorded, the same layer is run forward and backward in float64 on the CPU from those
    inputs, and ∂X and each parameter's gradient are compared. A layer whose own error is ~1e-7 passes on
    error from elsewhere; one at ~1e-3 computes it."""
    torch.manual_seed(0)
    method = build_method(
        {"name": "ce"}, build_model("resnet8", num_classes=10, in_channels=1, norm="rbn", width=0.5), 10
    )
    seen: list[tuple] = []
    backward = FusedRBN.backward

    def recording(ctx, g, g_m, g_v):  # noqa: ANN001, ANN202
        grads = backward(ctx, g, g_m, g_v)
        seen.append((g.detach().clone(), [t.detach().clone() for t in ctx.saved_tensors], ctx.eps, grads))
        return grads

    FusedRBN.backward = staticmethod(recording)
    try:
        step(method, x, y, device, torch.float32, device == "cpu")  # channels-last on the CPU, as above
    finally:
        FusedRBN.backward = staticmethod(backward)
    rows = []
    for i, (g, saved, eps, grads) in enumerate(seen):
        xs, _, _, wm, wv, wb, weight, bias = (t.double().cpu() for t in saved)
        leaves = [t.clone().requires_grad_() for t in (xs, wm, wv, wb, weight, bias)]
        out = FusedRBN.apply(*leaves, eps, None)[0]
        out.backward(g.double().cpu())
        names = ("dx", "center_weight", "scale_weight", "scale_bias", "weight", "bias")
        rows.append({"layer_in_backward_order": i, "shape": list(g.shape),
                     **{n: relative_error(d, leaf.grad) for n, d, leaf in zip(names, grads, leaves, strict=False)
                        if d is not None}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    report = {"torch": torch.__version__, "device": args.device, "runs": []}
    for norm in ("rbn", "bn"):
        torch.manual_seed(0)
        method = build_method({"name": "ce"}, build_model("resnet8", num_classes=10, in_channels=1, norm=norm,
                                                          width=0.5), 10)
        ref_loss, ref, ref_zeros = step(method, x, y, "cpu", torch.float64, False)
        for label, device, deterministic in (("cpu float32", "cpu", False), ("device float32", args.device, False),
                                             ("device float32, deterministic cuDNN", args.device, True)):
            torch.backends.cudnn.deterministic = deterministic
            loss, grads, zeros = step(method, x, y, device, torch.float32, device == "cpu")
            errors = sorted(((relative_error(grads[n], r), n) for n, r in ref.items()), reverse=True)
            row = {"norm": norm, "run": label, "loss_error": relative_error(loss, ref_loss),
                   "worst_gradients": [[n, e] for e, n in errors[:5]],
                   "relu_mask_flips": mask_flips(ref_zeros, zeros)}
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    torch.backends.cudnn.deterministic = False
    report["rbn_layers"] = rbn_layer_errors(args.device, x, y)
    for row in report["rbn_layers"]:
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
