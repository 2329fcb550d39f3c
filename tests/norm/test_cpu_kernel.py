"""RBN's C kernel (leannet/norm/rbn_cpu.c) against its PyTorch path, gradchecks through it, and the fallbacks."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leannet.norm import RepresentativeBatchNorm2d, cpu_kernel

REPO = str(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.skipif(cpu_kernel.library() is None, reason="no C compiler: RBN runs on its PyTorch path")


def random_layer(c: int, dtype: torch.dtype, momentum: float | None = 0.1, affine: bool = True):
    torch.manual_seed(c)
    layer = RepresentativeBatchNorm2d(c, momentum=momentum, affine=affine).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        layer.running_mean.normal_()
        layer.running_var.uniform_(0.5, 2)
    return layer


def channels_last_input(n, c, h, w, dtype):
    x = torch.randn(n, c, h, w, dtype=dtype) * 2 + 1
    return x.contiguous(memory_format=torch.channels_last).requires_grad_()


def step_on_both_paths(layer, x, g):
    """Output, input and parameter gradients and running statistics after one training step, per path."""
    results = {}
    for native in (True, False):
        trial = RepresentativeBatchNorm2d(layer.num_features, momentum=layer.momentum, affine=layer.affine).to(x.dtype)
        trial.load_state_dict(layer.state_dict())
        xi = x.detach().clone().requires_grad_()
        if native:
            assert cpu_kernel.usable(xi, *trial.parameters())
            y = trial(xi)
        else:
            with cpu_kernel.disabled():
                assert not cpu_kernel.usable(xi)
                y = trial(xi)
        y.backward(g)
        results[native] = [y.detach(), xi.grad, *(p.grad for p in trial.parameters()), trial.running_mean,
                           trial.running_var]
    return results


# channel counts around the kernel's block of 16, spatial sizes around its groups of 4 rows
SHAPES = [(6, 3, 5, 7), (4, 16, 4, 4), (5, 20, 3, 5), (3, 37, 2, 3), (2, 48, 7, 7), (8, 5, 1, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_equals_the_pytorch_path(shape, dtype):
    layer = random_layer(shape[1], dtype)
    x = channels_last_input(*shape, dtype)
    g = torch.randn_like(x)
    results = step_on_both_paths(layer, x, g)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-5}
    for kernel_value, torch_value in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(kernel_value, torch_value, **tol)


def test_kernel_without_affine_and_with_cumulative_momentum():
    layer = random_layer(19, torch.float64, momentum=None, affine=False)
    x = channels_last_input(4, 19, 6, 5, torch.float64)
    results = step_on_both_paths(layer, x, torch.randn_like(x))
    for kernel_value, torch_value in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(kernel_value, torch_value)


def test_gradcheck_through_the_kernel():
    """First-order gradients from the C backward; second order (create_graph) from the PyTorch formulas."""
    layer = random_layer(5, torch.float64)
    names = [n for n, _ in layer.named_parameters()]
    x = channels_last_input(3, 5, 3, 4, torch.float64)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    assert cpu_kernel.usable(x, *params)
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_sigmoid_saturates_like_torch():
    """The float sigmoid (a polynomial e^x) at extreme arguments: |w_v·k| far beyond e^x's float range."""
    layer = random_layer(16, torch.float32)
    with torch.no_grad():
        layer.scale_weight.copy_(torch.linspace(-300, 300, 16))
    x = channels_last_input(8, 16, 3, 3, torch.float32)
    results = step_on_both_paths(layer, x, torch.randn_like(x))
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-5)
    assert all(torch.isfinite(t).all() for t in results[True])


def test_threads_give_the_same_result():
    x = channels_last_input(32, 24, 9, 9, torch.float32)  # above the kernel's parallel threshold
    layer = random_layer(24, torch.float32)
    outputs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = layer(x)
            y.sum().backward()
            outputs.append((y.detach(), x.grad.clone()))
            x.grad = None
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pytorch_path_for_layouts_and_devices_the_kernel_does_not_take():
    x = torch.randn(2, 3, 4, 4)
    assert not cpu_kernel.usable(x)  # contiguous NCHW
    assert not cpu_kernel.usable(x.half().contiguous(memory_format=torch.channels_last))
    assert not cpu_kernel.usable(x.contiguous(memory_format=torch.channels_last), torch.ones(3, dtype=torch.float64))
    assert cpu_kernel.usable(x.contiguous(memory_format=torch.channels_last), torch.ones(3))


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_compiles_into_the_cache_atomically_and_falls_back_without_a_compiler(tmp_path):
    probe = ("import torch, warnings; warnings.simplefilter('always'); from leannet.norm import cpu_kernel; "
             "x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last); "
             "print(cpu_kernel.usable(x))")
    built = run_python(probe, {"LEANNET_CACHE": str(tmp_path / "good")})
    assert built.stdout.strip() == "True", built.stderr
    assert [p.suffix for p in (tmp_path / "good" / "kernels").iterdir()] == [".so"]  # no temporary left

    missing = run_python(probe, {"LEANNET_CACHE": str(tmp_path / "bad"), "CC": "/nonexistent/cc"})
    assert missing.stdout.strip() == "False"
    assert "RBN runs on its slower pure-PyTorch path" in missing.stderr

    off = run_python(probe, {"LEANNET_CACHE": str(tmp_path / "off"), "LEANNET_NATIVE": "0"})
    assert off.stdout.strip() == "False" and not (tmp_path / "off").exists()


def fuzz_tensor(rng, shape, dtype, layout):
    """A float tensor of ``shape``: channels-last, NCHW-contiguous, or a strided view of a larger one."""
    if layout == "strided":  # every other element of the last dimension: no layout the kernel takes
        return torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype)[..., ::2]
    if layout == "offset":  # channels-last inside a larger buffer: right strides, a storage offset
        big = torch.randn(shape[0] + 1, *shape[1:], dtype=dtype).contiguous(memory_format=torch.channels_last)
        return big[1:]
    t = torch.randn(*shape, dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" and t.dim() == 4 else t


def fuzz_case(rng):
    """One random FusedRBN call: half right, half with one or two faults (a wrong channel count, shape, dtype or
    layout of the input or of one per-channel tensor)."""
    n, c, h, w = rng.randint(1, 5), rng.randint(1, 40), rng.randint(1, 6), rng.randint(1, 6)
    if n * h * w == 1:
        n = 2
    dtype = rng.choice([torch.float32, torch.float64])
    names = ["wm", "wv", "wb", "weight", "bias", "running_mean", "running_var"]
    faults = {} if rng.random() < 0.5 else {rng.choice(["x", *names]): rng.choice(["size", "shape", "dtype", "layout"])
                                            for _ in range(rng.randint(1, 2))}
    layouts = ["contiguous", "strided", "offset"] if faults.get("x") == "layout" else ["channels_last", "offset"]
    x = fuzz_tensor(rng, (n, c, h, w), rng.choice([torch.float32, torch.float64, torch.float16])
                    if faults.get("x") == "dtype" else dtype, rng.choice(layouts))

    def param(name, fill):
        fault, size, shape, kind, layout = faults.get(name), c, (c,), dtype, "contiguous"
        if fault == "size":
            size = shape = rng.choice([c - 1, c + 1, c + 56, 0, 2 * c])
            shape = (size,)
        elif fault == "shape":
            shape = rng.choice([(c, 1), (1, c), (1,) if c > 1 else (2,)])
        elif fault == "dtype":
            kind = rng.choice([torch.float32, torch.float64, torch.float16, torch.int64])
        elif fault == "layout":
            layout = "strided"
        t = fuzz_tensor(rng, shape, torch.float64, layout).mul_(0.5).add_(fill).abs_()
        return t.to(kind) if kind != torch.float64 else t

    wm, wv, wb = param("wm", 0.0), param("wv", 0.0), param("wb", 1.0)
    weight = param("weight", 1.0) if rng.random() < 0.8 or "weight" in faults else None
    bias = param("bias", 0.0) if rng.random() < 0.8 or "bias" in faults else None
    with_running = rng.random() < 0.8 or {"running_mean", "running_var"} & set(faults)
    running = (param("running_mean", 0.0), param("running_var", 1.0), 0.1) if with_running else None
    description = (f"faults {faults}: x {tuple(x.shape)} {x.dtype} {x.stride()}, params "
                   + ", ".join("None" if p is None else f"{tuple(p.shape)} {p.dtype} {p.stride()}"
                               for p in (wm, wv, wb, weight, bias, *(running or (None, None))[:2])))
    return description, x, (wm, wv, wb, weight, bias), running


def fuzz_outcome(x, params, running, native):
    """Forward and backward of FusedRBN on one path: the values, or the type of the error raised."""
    from leannet.norm.rbn import FusedRBN

    x = x.detach().clone().requires_grad_()
    params = [None if p is None else p.detach().clone().requires_grad_(p.is_floating_point()) for p in params]
    running = None if running is None else (running[0].clone(), running[1].clone(), running[2])
    try:
        with contextlib.nullcontext() if native else cpu_kernel.disabled():
            y, m, v = FusedRBN.apply(x, *params, 1e-5, running)
            y.backward(torch.ones_like(y) + torch.arange(y.numel(), dtype=y.dtype).view_as(y) % 3)
    except Exception as error:  # noqa: BLE001 - the type is what the test compares
        return type(error).__name__
    grads = [x.grad, *(None if p is None else p.grad for p in params)]
    return [y, m, v, *grads, *(running[:2] if running else ())]


def close(a, b, tol: float) -> bool:
    """Both None, or equal shapes and values within ``tol`` relative to the largest value (NaN equal to NaN)."""
    if a is None or b is None:
        return a is None and b is None
    scale = max([1.0, *b.detach().abs().flatten().tolist()])
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True)


def fuzz(seed: int, count: int) -> int:
    """Runs ``count`` random cases through the kernel and the PyTorch path; prints each mismatch, returns how many."""
    import random

    rng = random.Random(seed)
    torch.manual_seed(seed)
    bad = 0
    for _ in range(count):
        description, x, params, running = fuzz_case(rng)
        kernel, reference = (fuzz_outcome(x, params, running, native) for native in (True, False))
        same = type(kernel) is type(reference)
        if same and isinstance(kernel, list):
            # float32 with one instance of two pixels is ill-conditioned: the kernel sums in double, PyTorch not
            tol = 1e-9 if x.dtype == torch.float64 else 1e-3
            same = all(close(a, b, tol) for a, b in zip(kernel, reference, strict=True))
        elif same:
            same = kernel == reference
        if not same:
            bad += 1
            summary = [k if isinstance(k, str) else "values" for k in (kernel, reference)]
            print(f"mismatch: {description}: kernel {summary[0]}, PyTorch path {summary[1]}", flush=True)
    return bad


def test_fuzz_the_kernel_against_the_pytorch_path():
    """Random right and wrong inputs (channel counts, dtypes, layouts): equal values or the same error.

    In a subprocess: on a kernel that trusts its input, a wrong channel count writes past buffers and the
    process may abort (heap corruption), which must fail this test rather than kill pytest."""
    done = subprocess.run([sys.executable, __file__, "fuzz", "0", "400"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO})
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    assert "mismatch" not in done.stdout, done.stdout[-3000:]


def test_a_wrong_channel_count_in_a_subprocess_raises_like_the_pytorch_path():
    """The issue's cases: RBN(8) on 7, 9 and 64 channels (64 aborted the process with heap corruption)."""
    code = ("import torch; from leannet.norm import RepresentativeBatchNorm2d as R\n"
            "for c in (7, 9, 64):\n"
            "    layer = R(8).train(); x = torch.randn(4, c, 5, 5).contiguous(memory_format=torch.channels_last)\n"
            "    try:\n        layer(x); print('returned', c)\n"
            "    except RuntimeError as e:\n        assert layer.running_mean.eq(0).all(); print('raised', c)\n"
            "from leannet.norm import cpu_kernel\n"
            "p = torch.ones(8)\n"
            "try:\n    cpu_kernel.forward(x, p, p, p, p, p, 1e-5)\n"
            "except ValueError as e:\n    print(e)\n")
    done = run_python(code, {"OMP_NUM_THREADS": "1", "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[:3] == ["raised 7", "raised 9", "raised 64"]
    assert "cannot take these tensors: a tensor of shape (8,) where (64,) is expected" in done.stdout


if __name__ == "__main__" and sys.argv[1:2] == ["fuzz"]:
    sys.exit(min(fuzz(int(sys.argv[2]), int(sys.argv[3])), 1))
