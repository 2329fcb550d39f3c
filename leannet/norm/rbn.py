"""Representative Batch Normalization (Gao, Han, Li, Cheng, Peng, CVPR 2021).

For an input X (N×C×H×W) with K(·) the per-instance, per-channel spatial mean:

    X_cm = X + w_m · K(X)                               (Eq. 2, centering calibration)
    X_s  = (X_cm − μ) / sqrt(σ² + ε)                    (standardization: batch statistics of X_cm,
                                                         running statistics in eval mode)
    X_cs = X_s · sigmoid(w_v · K(X_s) + w_b)            (Eq. 4, scaling calibration)
    Y    = γ · X_cs + β                                 (affine)

Fused formulation: every step is per (instance, channel) affine in X, so Y = a·X + b with a, b of
shape N×C computed from the per-instance mean and variance of X alone (:class:`InstanceMoments`:
two reductions; then one elementwise pass, ``addcmul``). The batch statistics of X_cm follow from those of X:
μ = (1 + w_m)·mean(X) and σ² = mean_n(var_hw(X)) + (1 + w_m)²·var_n(K(X)) (law of total variance).
In training mode the whole layer is one autograd function (:class:`FusedRBN`) whose backward is
written out (two reductions of the output gradient, one elementwise pass for ∂X), instead of autograd
walking ~40 small N×C operations per layer; it is built from differentiable operations, so double
backward works too (tested against the stepwise formulation, gradcheck and gradgradcheck). On float
CPU tensors in channels-last layout a C kernel (``rbn_cpu.c``, compiled on first use) runs both
directions with BatchNorm's memory traffic; ``LEANNET_NATIVE=0`` turns it off.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from leannet.models.norms import NORMS
from leannet.norm import cpu_kernel


class InstanceMoments(torch.autograd.Function):
    """Per-(instance, channel) spatial mean and population variance of an N×C×H×W tensor.

    Written out because ``torch.var_mean`` over (H, W) is several times slower than a whole
    BatchNorm on CPU. Forward: the mean, then the mean of (x − mean)². Backward:
    ∂/∂x = (g_mean + 2·(x − mean)·g_var) / (H·W), one elementwise pass; it is built from
    differentiable operations (and ``mean`` is a saved output), so double backward works too.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, Tensor]:  # noqa: ANN001
        size = x.shape[2] * x.shape[3]
        mean = x.sum(dim=(2, 3)) / size
        var = (x - mean[:, :, None, None]).square_().sum(dim=(2, 3)) / size  # two passes: no cancellation
        ctx.save_for_backward(x, mean)
        return mean, var

    @staticmethod
    def backward(ctx, g_mean: Tensor, g_var: Tensor) -> Tensor:  # noqa: ANN001
        x, mean = ctx.saved_tensors
        size = x.shape[2] * x.shape[3]
        scale = 2 * g_var / size
        offset = g_mean / size - scale * mean
        return torch.addcmul(offset[:, :, None, None], x, scale[:, :, None, None])


def _terms(m: Tensor, v: Tensor, wm: Tensor, wv: Tensor, wb: Tensor, weight: Tensor | None, eps: float) -> dict:
    """The N×C and C quantities of :class:`FusedRBN` from the instance moments m, v (few operations)."""
    mean_m = m.mean(0)
    d = m - mean_m  # D: K(X) around its batch mean
    between = (d * d).mean(0)
    a = 1 + wm
    a2 = a * a
    var = torch.addcmul(v.mean(0), a2, between)  # σ² of X_cm (law of total variance)
    r = torch.rsqrt(var + eps)
    ar = a * r
    k = d * ar  # K(X_s)
    s = torch.sigmoid(torch.addcmul(wb, wv, k))
    gamma_s = s if weight is None else s * weight
    return {"mean_m": mean_m, "d": d, "between": between, "a": a, "a2": a2, "var": var, "r": r, "ar": ar, "k": k,
            "s": s, "gamma_s": gamma_s, "gain": gamma_s * r}


def _forward(x: Tensor, wm: Tensor, wv: Tensor, wb: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
             running: tuple[Tensor, Tensor, float] | None) -> tuple[Tensor, Tensor, Tensor, dict]:
    """:class:`FusedRBN`'s forward in PyTorch operations: (Y, m, v, the terms its backward reuses)."""
    n, c = x.shape[0], x.shape[1]
    m = x.mean(dim=(2, 3))
    # (X − m)² in one elementwise pass (mse_loss fuses the subtraction and the square), into the
    # buffer that then holds Y: a fresh large allocation costs more than a pass
    out = nn.functional.mse_loss(x, m.view(n, c, 1, 1).expand_as(x), reduction="none")
    v = out.mean(dim=(2, 3))  # two passes (mean, then squares around it): no cancellation
    t = _terms(m, v, wm, wv, wb, weight, eps)
    gamma_s, gain = t["gamma_s"], t["gain"]
    shift = gamma_s * t["k"] if bias is None else torch.addcmul(bias, gamma_s, t["k"])
    shift = torch.addcmul(shift, gain, m, value=-1)
    if running is not None:
        update_running_stats(*running, t["a"] * t["mean_m"], t["var"], x.shape[0] * x.shape[2] * x.shape[3])
    return torch.addcmul(shift.view(n, c, 1, 1), x, gain.view(n, c, 1, 1), out=out), m, v, t


@torch.no_grad()
def update_running_stats(running_mean: Tensor, running_var: Tensor, momentum: float, mu: Tensor, var: Tensor,
                         values: int) -> None:
    """Move the running mean and (unbiased) variance ``momentum`` of the way to the batch's μ and σ²
    (σ² over ``values`` values), as ``nn.BatchNorm2d`` does."""
    running_mean.lerp_(mu.detach().to(running_mean.dtype), momentum)
    running_var.lerp_((var.detach() * (values / (values - 1))).to(running_var.dtype), momentum)


class FusedRBN(torch.autograd.Function):
    """Training-mode RBN of a float32/float64 N×C×H×W input with batch statistics: returns (Y, m, v).

    m, v are the instance moments (outputs, so that double backward sees how they depend on X); μ, σ²,
    the batch statistics of X_cm, only update ``running``. With X̂ = X − m,
    a = 1 + w_m, D = m − mean_n(m), r = 1/sqrt(σ² + ε), k = a·D·r and s = sigmoid(w_v·k + w_b),
    Y = γ·s·(r·X̂ + k) + β. The backward needs S1 = Σ_hw G and S2 = Σ_hw G·X̂ only; then
    ∂X = γ·s·r·G + ∂m/(HW) + 2·X̂·∂v/(HW), where ∂m and ∂v follow from the chain rule on N×C tensors.

    On float CPU tensors in channels-last layout both directions run as one C function each
    (:mod:`leannet.norm.cpu_kernel`): forward one read of X for m and v, one pass for Y; backward one
    read of G and X for S1 and S2, one pass for ∂X, the traffic of ``nn.BatchNorm2d``. Elsewhere
    (CUDA, NCHW, torch.compile, double backward) the same formulas run as PyTorch operations: forward
    Σ X, (X − m)² (one fused elementwise pass), its sum, Y; backward Σ G, G·X, its sum, ∂X (two
    passes), one N×C×H×W buffer per direction. ``running`` = (running mean, running variance,
    momentum) is updated in place from μ and σ² of X_cm when given.
    """

    @staticmethod
    def forward(ctx, x, wm, wv, wb, weight, bias, eps, running=None):  # noqa: ANN001, ANN205
        ctx.eps, ctx.terms = eps, None
        ctx.native = cpu_kernel.usable(x, wm, wv, wb, weight, bias, *(running[:2] if running else ()))
        ctx.set_materialize_grads(False)
        if ctx.native:
            y, m, v = cpu_kernel.forward(x, wm, wv, wb, weight, bias, eps, running)
        else:
            y, m, v, ctx.terms = _forward(x, wm, wv, wb, weight, bias, eps, running)
        ctx.save_for_backward(x, m, v, wm, wv, wb, weight, bias)
        return y, m, v

    @staticmethod
    def backward(ctx, g, g_m, g_v):  # noqa: ANN001, ANN205
        x, m, v, wm, wv, wb, weight, bias = ctx.saved_tensors
        # double backward differentiates this function: then the PyTorch formulas, from m and v (outputs)
        differentiable = torch.is_grad_enabled()
        need = ctx.needs_input_grad
        if ctx.native and not differentiable and g is not None and g_m is None and g_v is None:
            g = g.contiguous(memory_format=torch.channels_last)
            # checked again: a saved tensor's .data may have been swapped since the forward
            if cpu_kernel.problem(x, wm, wv, wb, weight, bias, moments=(m, v), grad=g) is None:
                grads = cpu_kernel.backward(g, x, m, v, wm, wv, wb, weight, bias, ctx.eps, input_grad=need[0])
                return *(grad if wanted else None for grad, wanted in zip(grads, need, strict=False)), None, None
        t = ctx.terms if ctx.terms is not None and not differentiable else _terms(m, v, wm, wv, wb, weight, ctx.eps)
        n, c, size = x.shape[0], x.shape[1], x.shape[2] * x.shape[3]
        d, r, k, s, gamma_s, gain = t["d"], t["r"], t["k"], t["s"], t["gamma_s"], t["gain"]
        grads: list[Tensor | None] = [None] * 8
        buf = None
        if g is None:
            dm = torch.zeros_like(m) if g_m is None else g_m
            scale = 2 * (torch.zeros_like(v) if g_v is None else g_v) / size
        else:
            s1 = g.sum(dim=(2, 3))
            gx = g * x if differentiable else torch.mul(g, x, out=torch.empty_like(x))
            s2 = torch.addcmul(gx.sum(dim=(2, 3)), m, s1, value=-1)  # Σ G·X̂
            buf = None if differentiable else gx  # reused for ∂X
            q = torch.addcmul(r * s2, k, s1)  # ∂L/∂(γ·s)
            gz = gamma_s * q
            gz = torch.addcmul(gz, gz, s, value=-1)  # ∂L/∂z = γ·q·s·(1 − s), z = w_v·k + w_b
            gk = torch.addcmul(gamma_s * s1, gz, wv)
            # ∂L/∂σ² = −r³/2 · Σ_n (γ·s·S2 + ∂k·D·a) = −r²/2 · Σ_n (gain·S2 + ∂k·k), as k = a·D·r
            g_var = torch.addcmul(gk * k, gain, s2).sum(0) * (r * r * -0.5)
            g_var2 = g_var * (2 / n)
            gd = torch.addcmul(gk * t["ar"], d, g_var2 * t["a2"])
            dm = torch.addcmul(gd - gd.mean(0), gain, s1, value=-1)
            scale = g_var2 / size  # per channel: ∂X gets 2·X̂·∂v/(HW) with ∂v = ∂σ²/N
            if g_m is not None:
                dm = dm + g_m
            if g_v is not None:
                scale = scale + g_v * (2 / size)
            if need[1]:
                grads[1] = torch.addcmul((gk * d).sum(0) * r, t["a"] * t["between"], g_var2,
                                         value=n)
            if need[2]:
                grads[2] = (gz * k).sum(0)
            if need[3]:
                grads[3] = gz.sum(0)
            if weight is not None and need[4]:
                grads[4] = (s * q).sum(0)
            if bias is not None and need[5]:
                grads[5] = s1.sum(0)
        if need[0]:
            offset = torch.addcmul(dm / size, m, scale, value=-1)
            dx = torch.addcmul(offset.view(n, c, 1, 1), x, scale.view(-1, c, 1, 1), out=buf)
            grads[0] = dx if g is None else dx.addcmul_(g, gain.view(n, c, 1, 1))
        return tuple(grads)


class RepresentativeBatchNorm2d(nn.Module):
    """Drop-in replacement for ``nn.BatchNorm2d`` with centering and scaling calibration (RBN).

    Same constructor, state (``weight`` γ, ``bias`` β, ``running_mean``, ``running_var``,
    ``num_batches_tracked``) and train/eval semantics as ``nn.BatchNorm2d``, plus the calibration
    parameters ``center_weight`` (w_m, init 0), ``scale_weight`` (w_v, init 0) and ``scale_bias``
    (w_b, init 1), each of shape (C,). Running statistics are those of the centered input X_cm.
    In eval mode both calibrations still use each instance's own mean, so an instance's output does
    not depend on the rest of its batch. The input is never modified in place. ``affine=False``
    drops γ and β only; the calibration parameters are what makes the layer RBN.

    Not a subclass of ``_BatchNorm`` on purpose: ``nn.SyncBatchNorm.convert_sync_batchnorm`` (and
    Lightning's ``sync_batchnorm``) would silently turn it into a plain SyncBatchNorm and drop the
    calibration, the official code's bug. Use :class:`SyncRepresentativeBatchNorm2d` (norm
    ``rbn_sync``, or ``convert_norm(model, "rbn_sync")``) to synchronize statistics across processes.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.center_weight = nn.Parameter(torch.zeros(num_features, **factory))
        self.scale_weight = nn.Parameter(torch.zeros(num_features, **factory))
        self.scale_bias = nn.Parameter(torch.ones(num_features, **factory))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    @torch.no_grad()
    def match_batchnorm_output_(self) -> None:
        """Divide γ by sigmoid(w_b), so a layer just converted from BN (w_m = w_v = 0) outputs what it did."""
        if self.affine:
            self.weight.div_(torch.sigmoid(self.scale_bias))

    def reset_parameters(self) -> None:
        """The official initialization: γ=1, β=0, w_m=0, w_v=0, w_b=1 (and fresh running statistics)."""
        self.reset_running_stats()
        with torch.no_grad():
            if self.affine:
                self.weight.fill_(1)
                self.bias.zero_()
            self.center_weight.zero_()
            self.scale_weight.zero_()
            self.scale_bias.fill_(1)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _batch_moments(self, inst_mean: Tensor, inst_var: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        """Mean of K(X), mean within-instance variance, variance of K(X) over instances, instance count."""
        mean = inst_mean.mean(0)
        return mean, inst_var.mean(0), (inst_mean - mean).square().mean(0), inst_mean.shape[0]

    def _synchronized(self) -> bool:
        """Whether batch statistics are reduced across processes (then the unfused path runs)."""
        return False

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        if x.shape[1] != self.center_weight.shape[0]:  # as nn.BatchNorm2d: a RuntimeError
            raise RuntimeError(f"{type(self).__name__}({self.center_weight.shape[0]}) got an input with "
                               f"{x.shape[1]} channels (size {tuple(x.shape)})")
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        wm, wv, wb = self.center_weight, self.scale_weight, self.scale_bias
        if use_batch and x.dtype in (torch.float32, torch.float64) and not self._synchronized():
            if x.shape[0] * x.shape[2] * x.shape[3] <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
            running = (self.running_mean, self.running_var, factor) if self.training and self.running_mean is not None \
                else None
            return FusedRBN.apply(x, wm, wv, wb, self.weight, self.bias, self.eps, running)[0]
        stats = x if x.dtype in (torch.float32, torch.float64) else x.float()  # low precision: stats in fp32
        if use_batch:
            inst_mean, inst_var = InstanceMoments.apply(stats)
            mean_k, within, between, count = self._batch_moments(inst_mean, inst_var)
            values = count * x.shape[2] * x.shape[3]
            if values <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
            mu = (1 + wm) * mean_k
            var = within + (1 + wm).square() * between  # the instance means of X_cm are (1 + w_m)·K(X)
            if self.training and self.running_mean is not None:
                update_running_stats(self.running_mean, self.running_var, factor, mu, var, values)
        else:
            inst_mean = stats.mean(dim=(2, 3))
            mu, var = self.running_mean, self.running_var
        inv_std = torch.rsqrt(var + self.eps)
        k_s = ((1 + wm) * inst_mean - mu) * inv_std  # K(X_s), shape N×C
        gain = torch.sigmoid(wv * k_s + wb) * inv_std
        if self.weight is not None:
            gain = gain * self.weight
        shift = gain * (wm * inst_mean - mu)
        if self.bias is not None:
            shift = shift + self.bias
        return torch.addcmul(shift[:, :, None, None].to(x.dtype), x, gain[:, :, None, None].to(x.dtype))


class SyncRepresentativeBatchNorm2d(RepresentativeBatchNorm2d):
    """RBN whose batch statistics are synchronized over a process group (keeps w_m, w_v, w_b).

    The per-instance means and variances are reduced with differentiable all-reduces
    (``torch.distributed.nn``), so gradients flow across processes as in ``nn.SyncBatchNorm``.
    Without an initialized process group, or with one process, it is exactly
    :class:`RepresentativeBatchNorm2d`. ``process_group`` defaults to the whole world.
    """

    def __init__(self, *args, process_group: dist.ProcessGroup | None = None, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _synchronized(self) -> bool:
        if not (dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group or dist.group.WORLD) > 1

    def _batch_moments(self, inst_mean: Tensor, inst_var: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        if not (dist.is_available() and dist.is_initialized()):
            return super()._batch_moments(inst_mean, inst_var)
        group = self.process_group or dist.group.WORLD
        if dist.get_world_size(group) == 1:
            return super()._batch_moments(inst_mean, inst_var)
        from torch.distributed.nn.functional import all_reduce

        n = inst_mean.new_full((1,), float(inst_mean.shape[0]))
        sums = all_reduce(torch.cat([inst_mean.sum(0), inst_var.sum(0), n]), group=group)
        c = inst_mean.shape[1]
        count = sums[-1]
        mean = sums[:c] / count
        # second reduction around the global mean: stabler than E[K²] − E[K]²
        between = all_reduce((inst_mean - mean).square().sum(0), group=group) / count
        return mean, sums[c:2 * c] / count, between, int(count.item())


@NORMS.register("rbn")
def representative_batch_norm(
    num_features: int,
    *,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """Representative BatchNorm (Gao et al. 2021): :class:`RepresentativeBatchNorm2d`."""
    return RepresentativeBatchNorm2d(
        num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )


@NORMS.register("rbn_sync")
def sync_representative_batch_norm(
    num_features: int,
    *,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """RBN with statistics synchronized across processes (DDP): :class:`SyncRepresentativeBatchNorm2d`."""
    return SyncRepresentativeBatchNorm2d(
        num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )


def rbn_steps(layer: RepresentativeBatchNorm2d, x: Tensor) -> dict[str, Tensor]:
    """The paper's four steps computed one by one (the reference for the fused forward and for plots).

    Returns ``centered`` (X_cm), ``standardized`` (X_s), ``calibrated`` (X_cs) and ``output`` (Y).
    Uses batch statistics when the layer would (training, or no running statistics), running ones
    otherwise; never updates the running statistics.
    """
    c = (1, -1, 1, 1)
    centered = x + layer.center_weight.view(c) * x.mean(dim=(2, 3), keepdim=True)
    if layer.training or layer.running_mean is None:
        var, mean = torch.var_mean(centered, dim=(0, 2, 3), correction=0, keepdim=True)
    else:
        mean, var = layer.running_mean.view(c), layer.running_var.view(c)
    standardized = (centered - mean) / torch.sqrt(var + layer.eps)
    scale = torch.sigmoid(
        layer.scale_weight.view(c) * standardized.mean(dim=(2, 3), keepdim=True) + layer.scale_bias.view(c)
    )
    calibrated = standardized * scale
    output = calibrated
    if layer.affine:
        output = calibrated * layer.weight.view(c) + layer.bias.view(c)
    return {"centered": centered, "standardized": standardized, "calibrated": calibrated, "output": output}
