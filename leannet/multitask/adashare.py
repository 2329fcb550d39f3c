"""AdaShare (Sun et al., NeurIPS 2020): per-task select-or-skip policies over a shared residual backbone.

Block l for task k computes ``x' = u_{k,l,0}·ReLU(r + F_l(x)) + u_{k,l,1}·r`` with r the block's shortcut,
so a skipped block (u = (0, 1)) is exactly its shortcut. Policies ``u`` come from per-task logits
α ∈ R^{K×L×2} (execute, skip) through Gumbel-softmax during the search and are fixed 0/1 afterwards.

>>> net = AdaShareNet({"segmentation": 5, "depth": 1})
>>> u = gumbel_policy(net.policy_logits, tau=5.0)          # soft, differentiable
>>> out = net(images, u)                                   # {"segmentation": ..., "depth": ...}
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leannet.errors import LeannetError
from leannet.models.norms import make_norm
from leannet.multitask.heads import DenseHead
from leannet.norm.recalibrate import running_stat_layers


class TaskNorm(nn.Module):
    """A norm layer whose running statistics are kept per task path (DESIGN.md, "State that depends on
    the path"): row k of every running buffer belongs to task k.

    The network sets :attr:`tasks` (the tasks whose path reaches this layer with this input) before each
    call; the layer normalises with the first one's statistics and, in training, writes the updated
    statistics to every task of the group (they saw the same input). Learned parameters (γ, β, RBN's
    calibration) stay shared: AdaShare shares weights, not data statistics. With every task on one path
    (hard sharing) all rows stay equal and the output equals the wrapped norm's. The official AdaShare
    code keeps one running average over all paths, so a block that tasks reach along different paths is
    evaluated with statistics that match none of them.
    """

    def __init__(self, norm: nn.Module, num_tasks: int) -> None:
        super().__init__()
        self.norm = norm
        self.stat_names = [name for name, b in norm.named_buffers(recurse=False) if b is not None]
        for name in self.stat_names:
            buffer = getattr(norm, name)
            self.register_buffer(f"task_{name}", buffer.detach().clone().unsqueeze(0).repeat(
                num_tasks, *([1] * buffer.ndim)))
            norm._non_persistent_buffers_set.add(name)
        self.tasks: tuple[int, ...] = tuple(range(num_tasks))
        self.register_load_state_dict_post_hook(_forget_inner_statistics)

    def statistics_key(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever a statistics row is written or replaced (PyTorch's in-place version counter), so
        a comparison of rows can be cached without reading device values."""
        rows = [getattr(self, f"task_{n}") for n in self.stat_names]
        return tuple((id(row), row._version) for row in rows)

    def same_statistics(self, a: int, b: int) -> bool:
        """Whether tasks ``a`` and ``b`` hold identical running statistics here."""
        return all(torch.equal(getattr(self, f"task_{n}")[a], getattr(self, f"task_{n}")[b])
                   for n in self.stat_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the wrapped norm gets copies (autograd may keep them); the rows take its updates afterwards
        first, rows = self.tasks[0], [getattr(self, f"task_{n}") for n in self.stat_names]
        for name, row in zip(self.stat_names, rows, strict=True):
            self.norm._buffers[name] = row[first].clone()
        y = self.norm(x)
        if self.training:
            with torch.no_grad():
                for name, row in zip(self.stat_names, rows, strict=True):
                    row[list(self.tasks)] = self.norm._buffers[name]
        return y


def _forget_inner_statistics(module: TaskNorm, incompatible: Any) -> None:
    # BatchNorm's loader inserts 'num_batches_tracked' into a state dict without version metadata (a filtered
    # copy) even when the buffer is not persistent; the statistics live in the task_* rows
    inner = [k for k in incompatible.unexpected_keys if k.rsplit(".", 2)[-2:-1] == ["norm"]
             and k.rsplit(".", 1)[-1] in module.stat_names]
    for key in inner:
        incompatible.unexpected_keys.remove(key)


def task_norms(module: nn.Module) -> list[TaskNorm]:
    """Every :class:`TaskNorm` inside ``module``."""
    return [m for m in module.modules() if isinstance(m, TaskNorm)]


@torch.no_grad()
def reestimate_task_statistics(net: nn.Module, policy: torch.Tensor | None, batches: Iterable[torch.Tensor]) -> int:
    """Replace every task's running statistics by their exact average over ``batches`` (inputs), each task's
    taken along its own path of ``policy``: the cumulative mean of PyTorch's ``momentum=None`` (Ioffe & Szegedy
    2015, Alg. 2). The network estimated is the one evaluation runs: stochastic depth's residual branches are
    scaled by their survival probability here too (Huang et al. 2016, eq. 5), while the norms collect
    statistics. Weights are untouched; the net is left in eval mode. Returns the number of batches used."""
    layers = task_norms(net)
    inner = {id(layer.norm) for layer in layers}
    plain = [m for m in running_stat_layers(net) if id(m) not in inner]  # one path: the stem's, the heads'
    momenta = [m.momentum for m in [layer.norm for layer in layers] + plain]
    for layer in layers:
        layer.norm.momentum = None
        for name in layer.stat_names:
            rows = getattr(layer, f"task_{name}")
            rows.copy_(torch.ones_like(rows) if name == "running_var" else torch.zeros_like(rows))
    for m in plain:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for block in net.modules():
        if getattr(block, "residual_scale", 1.0) != 1.0:
            block.training = False  # this module alone: its norms stay in training mode
    used = 0
    for x in batches:
        net(x, policy)
        used += 1
    for m, momentum in zip([layer.norm for layer in layers] + plain, momenta, strict=True):
        m.momentum = momentum
    net.eval()
    return used


class GatedBasicBlock(nn.Module):
    """A ResNet basic block that a policy can execute or skip (AdaShare eq. 1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "bn",
                 num_tasks: int = 1) -> None:
        super().__init__()

        def make(channels: int) -> nn.Module:
            layer = make_norm(norm, channels)
            return TaskNorm(layer, num_tasks) if any(True for _ in layer.buffers()) else layer

        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = make(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = make(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          make(out_channels))
        self.norms = task_norms(self)
        self.residual_scale = 1.0  # stochastic depth: F scaled by its survival probability in evaluation
        self._partitions: tuple[tuple, dict[tuple[int, ...], list[tuple[int, ...]]]] = ((), {})

    def partition(self, tasks: tuple[int, ...]) -> list[tuple[int, ...]]:
        """``tasks`` (who reach this block with the same input) grouped by equal running statistics: each
        group can be computed once. Statistics differ only where the tasks' paths differed while they were
        estimated (e.g. soft policies during the search). Cached until a statistics row changes: comparing
        rows reads them back from the device, once per pair and layer."""
        key = tuple(layer.statistics_key() for layer in self.norms)
        if self._partitions[0] != key:
            self._partitions = (key, {})
        cache = self._partitions[1]
        if tasks not in cache:
            cache[tasks] = self._group_by_statistics(tasks)
        return cache[tasks]

    def _group_by_statistics(self, tasks: tuple[int, ...]) -> list[tuple[int, ...]]:
        groups: list[tuple[int, ...]] = []
        for t in tasks:
            for i, group in enumerate(groups):
                if all(layer.same_statistics(group[0], t) for layer in self.norms):
                    groups[i] = (*group, t)
                    break
            else:
                groups.append((t,))
        return groups

    def for_tasks(self, tasks: tuple[int, ...]) -> GatedBasicBlock:
        """Route the next call through the running statistics of ``tasks`` (who share this input)."""
        for layer in self.norms:
            layer.tasks = tasks
        return self

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): conv-BN-ReLU-conv-BN."""
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``u`` = (execute, skip) weights; None executes. (Discrete policies skip F altogether: the network
        calls ``shortcut`` alone for a skipped block, so no value is read back from the device here.)"""
        r = self.shortcut(x)
        f = self.residual(x)
        if self.residual_scale != 1.0 and not self.training:  # Huang et al. 2016: test with p_l·F
            f = self.residual_scale * f
        if u is None:
            return F.relu(r + f)
        return u[0] * F.relu(r + f) + u[1] * r


class AdaShareNet(nn.Module):
    """Shared backbone of gated basic blocks, one dense head per task, and per-task policy logits.

    ``tasks`` maps task name → output channels. ``blocks[i]`` basic blocks of width ``widths[i]``
    form stage i (first block strided by ``strides[i]``); L = sum(blocks) gated blocks. ``norm`` is any
    registered norm (e.g. ``rbn``).
    """

    def __init__(self, tasks: dict[str, int], widths: tuple[int, ...] = (16, 32, 64),
                 blocks: tuple[int, ...] = (2, 2, 2), strides: tuple[int, ...] = (1, 2, 2), in_channels: int = 3,
                 head_dilations: tuple[int, ...] = (1, 2, 3), norm: str = "bn") -> None:
        super().__init__()
        if not tasks:
            raise LeannetError("AdaShareNet needs at least one task")
        if not len(widths) == len(blocks) == len(strides):
            raise LeannetError(f"widths {widths}, blocks {blocks} and strides {strides} must have the same length")
        self.task_names = list(tasks)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  make_norm(norm, widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for width, count, stride in zip(widths, blocks, strides, strict=True):
            for i in range(count):
                layers.append(GatedBasicBlock(cin, width, stride if i == 0 else 1, norm, len(tasks)))
                cin = width
        self.blocks = nn.ModuleList(layers)
        self.heads = nn.ModuleDict({name: DenseHead(cin, c, tuple(head_dilations)) for name, c in tasks.items()})
        # α_k initialised equal: execute and skip both 0.5 after softmax
        self.policy_logits = nn.Parameter(torch.zeros(len(tasks), len(layers), 2))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def get_extra_state(self) -> dict[str, list[str]]:
        """The task order, saved with the weights: rows of the policy logits, the per-task statistics and
        the heads follow it."""
        return {"tasks": list(self.task_names)}

    def set_extra_state(self, state: dict[str, list[str]]) -> None:
        saved = list(state.get("tasks", [])) if isinstance(state, dict) else []
        if saved != self.task_names:
            raise LeannetError(f"AdaShareNet state dict has tasks in the order {saved}, this network "
                               f"{self.task_names}: build it with the tasks in the saved order")

    def weight_parameters(self) -> list[nn.Parameter]:
        """Network weights (everything except the policy logits)."""
        return [p for name, p in self.named_parameters() if name != "policy_logits"]

    def forward(self, x: torch.Tensor, policy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predictions per task. ``policy`` [K, L, 2] (execute, skip) per task and block; None executes
        every block for every task (hard sharing). Discrete policies share the computation of common
        prefixes between tasks; soft ones run the backbone once per task."""
        size = x.shape[-2:]
        stem = self.stem(x)
        k = len(self.task_names)
        if policy is not None and policy.shape != (k, self.num_blocks, 2):
            raise LeannetError(f"policy must have shape ({k}, {self.num_blocks}, 2), got {tuple(policy.shape)}")
        if policy is None or (not policy.requires_grad and bool(((policy == 0) | (policy == 1)).all())):
            feats = self._shared_prefix_forward(stem, policy)
        else:
            feats = []
            for t in range(k):
                h = stem
                for l, block in enumerate(self.blocks):
                    h = block.for_tasks((t,))(h, policy[t, l])
                feats.append(h)
        return {name: self.heads[name](feats[t], size) for t, name in enumerate(self.task_names)}

    def _shared_prefix_forward(self, stem: torch.Tensor, policy: torch.Tensor | None) -> list[torch.Tensor]:
        k = len(self.task_names)
        execute = (torch.ones(k, self.num_blocks, dtype=torch.bool) if policy is None
                   else policy[..., 0].detach().cpu() == 1)
        prefix: dict[tuple, torch.Tensor] = {(): stem}
        keys: list[tuple] = [()] * k
        for l, block in enumerate(self.blocks):
            inputs: dict[tuple, tuple[int, ...]] = {}
            for t in range(k):
                step = (keys[t], bool(execute[t, l]))
                inputs[step] = (*inputs.get(step, ()), t)
            nxt = {}
            for (key, run), tasks in inputs.items():
                for group in block.partition(tasks):
                    block.for_tasks(group)
                    out = block(prefix[key]) if run else block.shortcut(prefix[key])
                    for t in group:
                        keys[t] = (*key, (run, group[0]))
                    nxt[keys[group[0]]] = out
            prefix = nxt
        return [prefix[keys[t]] for t in range(k)]


# ---- the policy: pure functions ----------------------------------------------------------------------------

def gumbel_policy(logits: torch.Tensor, tau: float, hard: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel-softmax sample u = softmax((α + g)/τ) over the last dim (execute, skip), one per task and
    block (shared over the batch). ``hard`` returns one-hot samples with straight-through gradients."""
    if not tau > 0:
        raise LeannetError(f"Gumbel-softmax temperature tau must be > 0, got {tau}")
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(uniform))
    soft = F.softmax((logits + gumbel) / tau, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), 2).to(soft.dtype)
    return one_hot - soft.detach() + soft


def learnable_blocks(epoch: int, speed: int, num_blocks: int) -> int:
    """Curriculum: in search epoch ``epoch`` (from 0) only the last ``epoch // speed + 1`` blocks
    (at most all of them) have learnable policies; earlier blocks are forced to execute."""
    if speed < 1:
        raise LeannetError(f"curriculum speed must be >= 1 epoch per block, got {speed}")
    return min(num_blocks, epoch // speed + 1)


def apply_curriculum(policy: torch.Tensor, learnable: int) -> torch.Tensor:
    """``policy`` [K, L, 2] with blocks before the last ``learnable`` forced to execute (u = (1, 0))."""
    forced = policy.shape[1] - learnable
    if forced <= 0:
        return policy
    execute = torch.zeros_like(policy[:, :forced])
    execute[..., 0] = 1
    return torch.cat([execute, policy[:, forced:]], dim=1)


LOSS_FORMS = ("paper", "official")


def sparsity_loss(logits: torch.Tensor, learnable: int | None = None, form: str = "paper") -> torch.Tensor:
    """L_sparsity over the unlocked (last ``learnable``) blocks: −log p_skip averaged over blocks, then
    averaged over tasks (``paper``) or summed over tasks (``official``, sunxm2357/AdaShare)."""
    if form not in LOSS_FORMS:
        raise LeannetError(f"unknown sparsity form '{form}'; valid forms: {', '.join(LOSS_FORMS)}")
    learnable = logits.shape[1] if learnable is None else learnable
    log_p = F.log_softmax(logits[:, logits.shape[1] - learnable:], dim=-1)
    per_task = -log_p[..., 1].mean(-1)
    return per_task.sum() if form == "official" else per_task.mean()


def sharing_weights(num_blocks: int) -> torch.Tensor:
    """(L − l)/L for blocks l = 0..L−1: differences in early blocks cost more, so early blocks are
    shared and late ones may become task specific (the paper's intent; the official code weights
    (l+1)/L, the opposite)."""
    return (num_blocks - torch.arange(num_blocks, dtype=torch.float32)) / num_blocks


def sharing_loss(logits: torch.Tensor, form: str = "paper") -> torch.Tensor:
    """L_sharing over task pairs. ``paper``: Σ_l (L − l)/L · |α_{k1,l} − α_{k2,l}|₁ over both logit columns
    (early blocks cost more: they stay shared). ``official`` (sunxm2357/AdaShare): Σ_l (l + 1)/L ·
    |α_{k1,l,0} − α_{k2,l,0}| on the execute column only."""
    if form not in LOSS_FORMS:
        raise LeannetError(f"unknown sharing form '{form}'; valid forms: {', '.join(LOSS_FORMS)}")
    k, num_blocks, _ = logits.shape
    if form == "paper":
        weights, columns = sharing_weights(num_blocks).to(logits), logits
    else:
        weights = (torch.arange(num_blocks, dtype=logits.dtype, device=logits.device) + 1) / num_blocks
        columns = logits[..., :1]
    total = logits.new_zeros(())
    for a, b in itertools.combinations(range(k), 2):
        total = total + (weights * (columns[a] - columns[b]).abs().sum(-1)).sum()
    return total


def execute_probability(logits: torch.Tensor) -> torch.Tensor:
    """p(execute) per task and block: softmax(α)[..., 0]."""
    return F.softmax(logits, dim=-1)[..., 0]


def sample_discrete(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A discrete policy (bool [K, L], True = execute) sampled from softmax(α), as the official code."""
    p = execute_probability(logits.detach()).cpu()
    return torch.rand(p.shape, generator=generator, dtype=p.dtype) < p


def policy_tensor(execute: torch.Tensor) -> torch.Tensor:
    """Bool [K, L] execute decisions → u [K, L, 2] (execute, skip) of zeros and ones."""
    execute = execute.float()
    return torch.stack([execute, 1 - execute], dim=-1)


def random_policy(counts: list[int], num_blocks: int, generator: torch.Generator) -> torch.Tensor:
    """Random-policy control: for task k, ``counts[k]`` blocks executed, chosen uniformly (bool [K, L])."""
    execute = torch.zeros(len(counts), num_blocks, dtype=torch.bool)
    for t, c in enumerate(counts):
        if not 0 <= c <= num_blocks:
            raise LeannetError(f"random policy: task {t} cannot execute {c} of {num_blocks} blocks")
        execute[t, torch.randperm(num_blocks, generator=generator)[:c]] = True
    return execute


def executed_params(net: AdaShareNet, execute: torch.Tensor | None = None) -> int:
    """Parameters a deployed network needs: stem, heads, and the blocks some task executes (a skipped
    block's projection shortcut still counts)."""
    execute = torch.ones(len(net.task_names), net.num_blocks, dtype=torch.bool) if execute is None else execute
    count = sum(p.numel() for p in net.stem.parameters()) + sum(p.numel() for p in net.heads.parameters())
    for l, block in enumerate(net.blocks):
        if bool(execute[:, l].any()):
            count += sum(p.numel() for p in block.parameters())
        else:
            count += sum(p.numel() for p in block.shortcut.parameters())
    return count
