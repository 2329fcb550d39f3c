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
                    getattr(library, f"{name}_{suffix}").restype = ctypes.c_int
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


# the C index type (long) must hold every index and buffer size the kernels compute: N·C·HW, 13·C, 5·N·C
_INDEX_LIMIT = 2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1) // 16


def _plain(t: Tensor) -> bool:
    """A strided CPU tensor without a lazy negation or conjugation (its memory holds its values)."""
    return t.is_cpu and t.layout == torch.strided and not t.is_neg() and not t.is_conj()


def problem(x: Tensor, *params: Tensor | None, moments: tuple[Tensor, ...] = (),
            grad: Tensor | None = None) -> str | None:
    """Why the C functions cannot take these tensors, or ``None`` when they can: every precondition of the C
    call, which reads and writes raw memory. ``x``: a float32/float64 N×C×H×W CPU tensor, channels-last
    contiguous, its sizes within the C index type; ``params``: per-channel tensors (C,), contiguous, none
    sharing memory with another (the running statistics are written in place); ``moments``: N×C tensors,
    contiguous; ``grad``: ∂Y, channels-last, x's shape. All strided, on the CPU, of x's dtype, not lazily
    negated. Costs a few microseconds per call (checked before every forward and backward)."""
    if not (isinstance(x, Tensor) and x.dtype in _SUFFIX and _plain(x)):
        return "x is not a strided float32/float64 CPU tensor"
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return f"x is not a channels-last N×C×H×W tensor (shape {tuple(x.shape)}, strides {x.stride()})"
    n, c, h, w = x.shape
    if max(n, 1) * max(c, 1) * max(h * w, 1) > _INDEX_LIMIT:
        return f"x has too many elements for the C index type ({x.numel()})"
    dtype, per_channel, per_instance = x.dtype, (c,), (n, c)
    for t in (*params, *moments):
        if t is None:
            continue
        if not isinstance(t, Tensor) or t.dtype != dtype or not _plain(t):
            return f"a tensor of dtype {getattr(t, 'dtype', type(t).__name__)} beside x of {dtype}"
        if not t.is_contiguous():
            return f"a non-contiguous tensor of shape {tuple(t.shape)} (strides {t.stride()})"
    for t in params:
        if t is not None and tuple(t.shape) != per_channel:
            return f"a tensor of shape {tuple(t.shape)} where {per_channel} is expected"
    for t in moments:
        if tuple(t.shape) != per_instance:
            return f"a tensor of shape {tuple(t.shape)} where {per_instance} is expected"
    if grad is not None and not (isinstance(grad, Tensor) and grad.dtype == dtype and _plain(grad)
                                 and grad.shape == x.shape and grad.is_contiguous(memory_format=torch.channels_last)):
        return "the output gradient is not a channels-last tensor of x's shape and dtype"
    # per-channel tensors may be written in place (the running statistics): no two arguments may overlap
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                   for t in (x, *moments, grad, *params) if t is not None and t.numel())
    if any(spans[i][0] < spans[i - 1][1] for i in range(1, len(spans))):
        return "two of the tensors share memory"
    return None


def usable(x: Tensor, *params: Tensor | None) -> bool:
    """Whether the C functions can take ``x`` and the per-channel ``params`` (see :func:`problem`), outside
    torch.compile (which cannot trace ctypes), with the kernels enabled and compiled."""
    return (not _off and not torch.compiler.is_compiling() and problem(x, *params) is None
            and library() is not None)


def _check(reason: str | None) -> None:
    if reason is not None:
        raise ValueError(f"RBN's C kernel cannot take these tensors: {reason}; call FusedRBN, which takes "
                         "the PyTorch path for them")


def _loaded() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError("RBN's C kernel is not loaded (LEANNET_NATIVE=0 or no C compiler); call FusedRBN")
    return lib


def _check_status(status: int) -> None:
    if status != 0:
        raise MemoryError("RBN's C kernel could not allocate its buffers; use a smaller batch")


def _pointer(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def forward(x: Tensor, wm: Tensor, wv: Tensor, wb: Tensor, weight: Tensor | None, bias: Tensor | None,
            eps: float, running: tuple[Tensor, Tensor, float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode RBN of ``x`` with batch statistics: (Y, m, v) as in ``FusedRBN.forward``; updates
    ``running`` = (running mean, running variance, momentum) in place when given. Raises ``ValueError``
    for tensors the C function cannot take (:func:`problem`) before it touches memory."""
    _check(problem(x, wm, wv, wb, weight, bias, *(running[:2] if running is not None else ())))
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    m, v = x.new_empty(n, c), x.new_empty(n, c)
    running_mean, running_var, momentum = running if running is not None else (None, None, 0.0)
    _check_status(getattr(_loaded(), f"rbn_forward_{_SUFFIX[x.dtype]}")(
        *map(_pointer, (x, wm, wv, wb, weight, bias)), ctypes.c_double(eps), ctypes.c_long(n), ctypes.c_long(c),
        ctypes.c_long(h * w), *map(_pointer, (y, m, v, running_mean, running_var)), ctypes.c_double(momentum),
        ctypes.c_int(torch.get_num_threads())))
    return y, m, v


def backward(g: Tensor, x: Tensor, m: Tensor, v: Tensor, wm: Tensor, wv: Tensor, wb: Tensor,
             weight: Tensor | None, bias: Tensor | None, eps: float, input_grad: bool = True) -> tuple:
    """First-order gradients of ``forward``'s Y: (∂X or None, ∂w_m, ∂w_v, ∂w_b, ∂γ or None, ∂β or None).
    Raises ``ValueError`` for tensors the C function cannot take (:func:`problem`) before it touches memory."""
    g = g.contiguous(memory_format=torch.channels_last)
    _check(problem(x, wm, wv, wb, weight, bias, moments=(m, v), grad=g))
    n, c, h, w = x.shape
    dx = torch.empty_like(x) if input_grad else None
    dwm, dwv, dwb = x.new_empty(c), x.new_empty(c), x.new_empty(c)
    dweight = None if weight is None else x.new_empty(c)
    dbias = None if bias is None else x.new_empty(c)
    _check_status(getattr(_loaded(), f"rbn_backward_{_SUFFIX[x.dtype]}")(
        *map(_pointer, (g, x, m, v, wm, wv, wb, weight)), ctypes.c_double(eps), ctypes.c_long(n),
        ctypes.c_long(c), ctypes.c_long(h * w), *map(_pointer, (dx, dwm, dwv, dwb, dweight, dbias)),
        ctypes.c_int(torch.get_num_threads())))
    return dx, dwm, dwv, dwb, dweight, dbias
