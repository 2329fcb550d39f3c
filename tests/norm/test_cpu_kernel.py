"""RBN's C kernel (leannet/norm/rbn_cpu.c) against its PyTorch path, gradchecks through it, and the fallbacks."""

import subprocess
import sys

import pytest
import torch

from leannet.norm import RepresentativeBatchNorm2d, cpu_kernel

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
