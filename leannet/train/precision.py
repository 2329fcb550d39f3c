"""Which `trainer.precision` a run may use: one pure function, so the refusal is tested without a GPU.

Lightning accepts every precision on every device, but not every pair does what it says:
float16 on the CPU runs without a gradient scaler (Lightning scales only on CUDA), so small gradients
underflow to zero; and a technique may declare precisions it cannot train in
(`Method.precision_refusals`, e.g. spiking nets in half-precision weights). Mixed precision
(`bf16-mixed`, and `16-mixed` on CUDA) is what the techniques are tested with (tests/cuda).
"""

from __future__ import annotations

from collections.abc import Mapping

ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}  # Lightning's own aliases
CUDA_ONLY = ("16-mixed", "16-true")


def canonical(precision: str) -> str:
    """Lightning's name for a precision (`16` -> `16-mixed`, `bf16` -> `bf16-mixed`, `32` -> `32-true`)."""
    return ALIASES.get(str(precision), str(precision))


def device_type(accelerator: str, cuda_available: bool) -> str:
    """`cuda` or `cpu` (or the accelerator's own name, e.g. `mps`) for a `trainer.accelerator` value."""
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available):
        return "cuda"
    return "cpu" if accelerator == "auto" else accelerator


def precision_refusal(precision: str, device: str, method: str = "",
                      method_refusals: Mapping[str, str] | None = None) -> str | None:
    """Why `precision` cannot train `method` on `device` (`cuda`, `cpu`, ...), as one line; None if it can."""
    name = canonical(precision)
    if name in CUDA_ONLY and device != "cuda":
        return (f"trainer.precision={precision} needs a CUDA GPU: on the {device} float16 trains without a "
                "gradient scaler, so small gradients become zero; use trainer.precision=bf16-mixed (or 32-true)")
    if name.startswith("transformer-engine"):
        return (f"trainer.precision={precision} (NVIDIA Transformer Engine) is not supported by leannet; "
                "use trainer.precision=bf16-mixed or 16-mixed")
    reason = (method_refusals or {}).get(name)
    if reason:
        return f"method {method} cannot train at trainer.precision={precision}: {reason}; use bf16-mixed or 32-true"
    return None
