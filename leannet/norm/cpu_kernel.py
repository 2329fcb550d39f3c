"""RBN's training-mode forward and backward as C functions (``rbn_cpu.c``), compiled on first use, called
through ctypes.

PyTorch has no single CPU call for "per-instance mean and variance" or "per-instance Σg and Σg·x̂", so
the pure-PyTorch path of :class:`leannet.norm.rbn.FusedRBN` reads each tensor 4–7 times where
BatchNorm reads it 2–3 times, and spends ~40 small N×C operations per layer and direction. The C
functions read each tensor as often as BatchNorm does and do the N×C arithmetic in a few loops. They
cover float32 and float64 CPU tensors in channels-last layout (the fast one for CNNs on the CPU);
anything else (CUDA, contiguous NCHW, torch.compile, double backward) takes the PyTorch path, which
computes the same values (tested against each other).

The shared library is built with the C compiler (``$CC``, else ``cc``) into
``$LEANNET_CACHE/kernels`` (default ``~/.cache/leannet/kernels``), named by a hash of the source, the
flags and the CPU, written atomically. Without a compiler, leannet warns once and uses the PyTorch path.
``LEANNET_NATIVE=0`` turns the kernels off.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("rbn_cpu.c")
# the first that compiles wins; -fno-trapping-math lets the clamps in the sigmoid vectorize (no result changes)
FLAGS = tuple(["-O3", "-fno-trapping-math", *extra] for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], []))
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_library: ctypes.CDLL | None = None
_tried = False
_off = 0  # > 0 inside `disabled()`


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$LEANNET_CACHE/kernels`` (default ``~/.cache/leannet/kernels``)."""
    return Path(os.environ.get("LEANNET_CACHE", Path.home() / ".cache" / "leannet")) / "kernels"


def _cpu_id() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next((line for line in info.splitlines() if line.startswith("flags")), "") + platform.processor()
    except OSError:
        return platform.processor()


def _compile(compiler: str, flags: list[str], target: Path) -> str | None:
    """Build ``target`` (atomically: in a temporary folder beside it, then renamed); the error text if it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run([compiler, *flags, "-shared", "-fPIC", str(SOURCE), "-o", str(built), "-lm"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return " ".join(done.stderr.split())[-300:] or f"exit status {done.returncode}"
        os.replace(built, target)
    return None


def _load() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler found (install gcc, or set CC)")
    source = SOURCE.read_bytes()
    error = None
    for flags in FLAGS:
        key = hashlib.sha256(source + " ".join([compiler, *flags, platform.machine(), _cpu_id()]).encode())
        target = cache_dir() / f"rbn_cpu-{key.hexdigest()[:16]}.so"
        if target.exists() or (error := _compile(compiler, flags, target)) is None:
            library = ctypes.CDLL(str(target))
            for suffix in _SUFFIX.values():
                for name in ("rbn_forward", "rbn_backward"):
                    getattr(library, f"{name}_{suffix}").restype = None
            return library
    raise OSError(f"{compiler} could not compile {SOURCE} ({error})")


def library() -> ctypes.CDLL | None:
    """The loaded kernels, compiling them on first use; ``None`` when disabled or not compilable."""
    global _library, _tried
    if not _tried:
        _tried = True
        if os.environ.get("LEANNET_NATIVE", "1") != "0":
            try:
                _library = _load()
            except (OSError, subprocess.SubprocessError) as error:
                warnings.warn(f"RBN runs on its slower pure-PyTorch path: {error}; LEANNET_NATIVE=0 skips the kernel "
                              "without this warning", stacklevel=2)
    return _library


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run RBN on its PyTorch path inside this block (e.g. to compare both paths)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def usable(x: Tensor, *params: Tensor | None) -> bool:
    """Whether the C functions can take ``x`` (a float32/float64 channels-last N×C×H×W CPU tensor) and
    the per-channel ``params`` (contiguous, same dtype), outside torch.compile (which cannot trace ctypes)."""
    return (x.device.type == "cpu" and x.dtype in _SUFFIX and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and all(p is None or (p.dtype == x.dtype and p.device == x.device and p.is_contiguous()) for p in params)
            and not _off and not torch.compiler.is_compiling() and library() is not None)


def _pointer(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def forward(x: Tensor, wm: Tensor, wv: Tensor, wb: Tensor, weight: Tensor | None, bias: Tensor | None,
            eps: float, running: tuple[Tensor, Tensor, float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode RBN of ``x`` with batch statistics: (Y, m, v) as in ``FusedRBN.forward``; updates
    ``running`` = (running mean, running variance, momentum) in place when given."""
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    m, v = x.new_empty(n, c), x.new_empty(n, c)
    running_mean, running_var, momentum = running if running is not None else (None, None, 0.0)
    getattr(library(), f"rbn_forward_{_SUFFIX[x.dtype]}")(
        *map(_pointer, (x, wm, wv, wb, weight, bias)), ctypes.c_double(eps), ctypes.c_long(n), ctypes.c_long(c),
        ctypes.c_long(h * w), *map(_pointer, (y, m, v, running_mean, running_var)), ctypes.c_double(momentum),
        ctypes.c_int(torch.get_num_threads()))
    return y, m, v


def backward(g: Tensor, x: Tensor, m: Tensor, v: Tensor, wm: Tensor, wv: Tensor, wb: Tensor,
             weight: Tensor | None, bias: Tensor | None, eps: float, input_grad: bool = True) -> tuple:
    """First-order gradients of ``forward``'s Y: (∂X or None, ∂w_m, ∂w_v, ∂w_b, ∂γ or None, ∂β or None)."""
    n, c, h, w = x.shape
    g = g.contiguous(memory_format=torch.channels_last)
    dx = torch.empty_like(x) if input_grad else None
    dwm, dwv, dwb = x.new_empty(c), x.new_empty(c), x.new_empty(c)
    dweight = None if weight is None else x.new_empty(c)
    dbias = None if bias is None else x.new_empty(c)
    getattr(library(), f"rbn_backward_{_SUFFIX[x.dtype]}")(
        *map(_pointer, (g, x, m, v, wm, wv, wb, weight)), ctypes.c_double(eps), ctypes.c_long(n),
        ctypes.c_long(c), ctypes.c_long(h * w), *map(_pointer, (dx, dwm, dwv, dwb, dweight, dbias)),
        ctypes.c_int(torch.get_num_threads()))
    return dx, dwm, dwv, dwb, dweight, dbias
