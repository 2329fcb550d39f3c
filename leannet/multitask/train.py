"""A plain multi-task training loop: baselines and AdaShare's three phases on procedural scenes.

Methods (``config.method``):
- ``single``: one network per task, every block executed;
- ``hard``: one backbone shared by all tasks (every block executed), one head per task;
- ``random``: a fixed random policy (per task, ``random.counts[k]`` executed blocks chosen uniformly);
- ``adashare``: warm-up (hard sharing) → search (alternating weight / policy epochs on two halves of the
  training set, Gumbel-softmax with τ decay, curriculum) → sample discrete policies, keep the best on
  the policy half → re-train from scratch with it.
Every final network is trained for ``epochs`` epochs on the whole training set and scored on the test set.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from leannet.config import find_recipe, parse_overrides, read_yaml
from leannet.data.scenes import load_scenes
from leannet.errors import LeannetError
from leannet.multitask.adashare import (
    AdaShareNet,
    apply_curriculum,
    execute_probability,
    executed_params,
    gumbel_policy,
    learnable_blocks,
    policy_tensor,
    random_policy,
    sample_discrete,
    sharing_loss,
    sparsity_loss,
)
from leannet.multitask.heads import task_specs
from leannet.multitask.metrics import task_metric
from leannet.runio import atomic_torch_save
from leannet.train.checks import at_least, check_writable, positive

METHODS = ("single", "hard", "random", "adashare")


# ---- config ------------------------------------------------------------------------------------------------

@dataclass
class MTData:
    train_count: int = 3000
    test_count: int = 1000
    size: int = 32
    seed: int = 0  # the scenes; fixed across run seeds so every run sees the same data
    batch_size: int = 64


@dataclass
class MTModel:
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2])
    strides: list[int] = field(default_factory=lambda: [1, 2, 2])
    head_dilations: list[int] = field(default_factory=lambda: [1, 2, 3])


@dataclass
class MTOptim:
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    policy_lr: float = 0.01  # Adam, policy phases


@dataclass
class AdaShareConfig:
    warmup_epochs: int = 2
    search_epochs: int = 8
    tau: float = 5.0
    tau_decay: float = 0.965  # ×τ after every policy phase
    sparsity: float = 0.01   # λ_sp
    sharing: float = 0.05    # λ_sh
    curriculum_speed: int = 1  # search epochs per newly unlocked block
    samples: int = 8           # discrete policies sampled from softmax(α); the best on the policy half is kept


@dataclass
class RandomConfig:
    counts: list[int] = field(default_factory=list)  # executed blocks per task (default: half of L)


@dataclass
class MTConfig:
    name: str = "multitask"
    out_dir: str = "runs/multitask"
    seed: int = 0
    method: str = "adashare"
    tasks: list[str] = field(default_factory=lambda: ["segmentation", "depth", "normals"])
    task_weights: dict[str, float] = field(default_factory=dict)  # λ_k, default 1
    epochs: int = 10
    threads: int | None = None
    data: MTData = field(default_factory=MTData)
    model: MTModel = field(default_factory=MTModel)
    optim: MTOptim = field(default_factory=MTOptim)
    adashare: AdaShareConfig = field(default_factory=AdaShareConfig)
    random: RandomConfig = field(default_factory=RandomConfig)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> DictConfig:
    """A multi-task recipe (YAML) merged onto the typed schema, plus ``key=value`` overrides."""
    config = OmegaConf.structured(MTConfig)
    layers = [read_yaml(find_recipe(path))] if path is not None else []
    layers += [parse_overrides(list(overrides))] if overrides else []
    try:
        for layer in layers:
            config = OmegaConf.merge(config, layer)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise LeannetError(f"bad multitask config key or value '{key}': {str(err).splitlines()[0]}; "
                           f"top-level keys: {', '.join(OmegaConf.structured(MTConfig).keys())}") from None
    if config.method not in METHODS:
        raise LeannetError(f"unknown multitask method '{config.method}'; valid: {', '.join(METHODS)}")
    task_specs(list(config.tasks))
    check_config(config)
    return config


def check_config(config: DictConfig) -> None:
    """Values the schema cannot check: counts and sizes >= 1, a positive learning rate."""
    for key in ("epochs", "data.batch_size", "data.train_count", "data.test_count", "data.size",
                "adashare.samples", "adashare.curriculum_speed"):
        at_least(key, OmegaConf.select(config, key), 1, OmegaConf.select(OmegaConf.structured(MTConfig), key))
    for key in ("adashare.warmup_epochs", "adashare.search_epochs"):
        at_least(key, OmegaConf.select(config, key), 0, OmegaConf.select(OmegaConf.structured(MTConfig), key))
    if config.threads is not None:
        at_least("threads", config.threads, 1, 1)
    at_least("optim.lr", config.optim.lr, 0, 0.05)
    positive("optim.policy_lr", config.optim.policy_lr, 0.01)
    positive("adashare.tau", config.adashare.tau, 5.0)


def new_run_dir(config: DictConfig) -> Path:
    """``out_dir/<name>-<method>-seed<N>``, suffixed -2, -3 … so an earlier run is never overwritten."""
    base = Path(config.out_dir) / f"{config.name}-{config.method}-seed{config.seed}"
    run_dir, k = base, 1
    while run_dir.exists():
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


# ---- data --------------------------------------------------------------------------------------------------

@dataclass
class DenseData:
    """Normalised float images and per-task targets, all in memory."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.images)


def scenes_data(data: MTData | DictConfig, tasks: list[str]) -> tuple[DenseData, DenseData]:
    """Train and test sets of procedural scenes (test from a different seed), normalised with the
    training images' per-channel statistics."""
    train = load_scenes(data.train_count, data.seed, data.size)
    test = load_scenes(data.test_count, data.seed + 1_000_003, data.size)
    x = torch.from_numpy(train.image).float() / 255
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)

    def wrap(s: Any) -> DenseData:
        images = (torch.from_numpy(s.image).float() / 255 - mean) / std
        return DenseData(images, {t: torch.from_numpy(np.ascontiguousarray(getattr(s, t))) for t in tasks})

    return wrap(train), wrap(test)


def batches(data: DenseData, index: torch.Tensor, batch_size: int, generator: torch.Generator | None):
    """Shuffled (when ``generator`` is given) mini-batches of ``data[index]``; the last partial batch is
    dropped in training so BatchNorm never sees a tiny batch."""
    order = index[torch.randperm(len(index), generator=generator)] if generator is not None else index
    stop = len(order) - (len(order) % batch_size if generator is not None and len(order) > batch_size else 0)
    for start in range(0, stop, batch_size):
        b = order[start:start + batch_size]
        yield data.images[b], {t: v[b] for t, v in data.targets.items()}


# ---- phases ------------------------------------------------------------------------------------------------

def task_losses(net: AdaShareNet, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_k λ_k L_k and the individual losses."""
    specs = {s.name: s for s in task_specs(net.task_names)}
    parts = {t: specs[t].loss(outputs[t], targets[t]) for t in net.task_names}
    total = sum(weights.get(t, 1.0) * v for t, v in parts.items())
    return total, {t: float(v.detach()) for t, v in parts.items()}


def set_phase(net: AdaShareNet, phase: str) -> None:
    """``weights``: only network weights get gradients; ``policy``: only the policy logits."""
    for p in net.weight_parameters():
        p.requires_grad_(phase == "weights")
    net.policy_logits.requires_grad_(phase == "policy")


def weight_step(net: AdaShareNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, targets: dict,
                policy: torch.Tensor | None, weights: dict[str, float]) -> float:
    """One SGD step on the network weights with the policy frozen (``policy`` detached)."""
    set_phase(net, "weights")
    optimizer.zero_grad(set_to_none=True)
    loss, _ = task_losses(net, net(x, None if policy is None else policy.detach()), targets, weights)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def policy_step(net: AdaShareNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, targets: dict, tau: float,
                learnable: int, cfg: AdaShareConfig | DictConfig, weights: dict[str, float],
                generator: torch.Generator | None = None) -> float:
    """One Adam step on the policy logits with the weights frozen: task losses under a Gumbel-softmax
    policy (curriculum applied) + λ_sp·L_sparsity + λ_sh·L_sharing."""
    set_phase(net, "policy")
    optimizer.zero_grad(set_to_none=True)
    u = apply_curriculum(gumbel_policy(net.policy_logits, tau, generator=generator), learnable)
    loss, _ = task_losses(net, net(x, u), targets, weights)
    loss = loss + cfg.sparsity * sparsity_loss(net.policy_logits, learnable) + cfg.sharing * sharing_loss(
        net.policy_logits)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(net: AdaShareNet, data: DenseData, policy: torch.Tensor | None, batch_size: int = 250
             ) -> dict[str, dict[str, float]]:
    """Test metrics per task under a fixed policy (None = every block)."""
    net.eval()
    metrics = {t: task_metric(t, net.heads[t].branches[0][-1].out_channels) for t in net.task_names}
    for x, targets in batches(data, torch.arange(len(data)), batch_size, None):
        out = net(x, policy)
        for t in net.task_names:
            metrics[t].update(out[t], targets[t])
    net.train()
    return {t: m.compute() for t, m in metrics.items()}


@torch.no_grad()
def policy_loss(net: AdaShareNet, data: DenseData, index: torch.Tensor, policy: torch.Tensor,
                weights: dict[str, float], batch_size: int = 250) -> float:
    """Mean weighted task loss of a discrete policy on ``data[index]`` (eval mode)."""
    net.eval()
    total, n = 0.0, 0
    for x, targets in batches(data, index, batch_size, None):
        loss, _ = task_losses(net, net(x, policy), targets, weights)
        total += float(loss) * len(x)
        n += len(x)
    net.train()
    return total / n


def build_net(config: DictConfig, tasks: list[str]) -> AdaShareNet:
    """An AdaShareNet for ``tasks`` with the recipe's backbone."""
    m = config.model
    channels = {s.name: s.channels for s in task_specs(tasks)}
    return AdaShareNet(channels, tuple(m.widths), tuple(m.blocks), tuple(m.strides),
                       head_dilations=tuple(m.head_dilations))


def sgd(net: AdaShareNet, config: DictConfig) -> torch.optim.SGD:
    o = config.optim
    return torch.optim.SGD(net.weight_parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def fit(net: AdaShareNet, train: DenseData, config: DictConfig, policy: torch.Tensor | None,
        generator: torch.Generator, log: list[dict]) -> None:
    """Train the weights for ``config.epochs`` on the whole training set (cosine LR) with a fixed policy."""
    optimizer = sgd(net, config)
    steps = config.epochs * (len(train) // config.data.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    weights = dict(config.task_weights)
    for epoch in range(config.epochs):
        losses = []
        for x, targets in batches(train, torch.arange(len(train)), config.data.batch_size, generator):
            losses.append(weight_step(net, optimizer, x, targets, policy, weights))
            scheduler.step()
        log.append({"phase": "train", "epoch": epoch, "loss": float(np.mean(losses))})


def search(net: AdaShareNet, train: DenseData, config: DictConfig, generator: torch.Generator,
           log: list[dict]) -> torch.Tensor:
    """AdaShare's warm-up and policy search; returns the chosen discrete policy (bool [K, L])."""
    cfg, weights = config.adashare, dict(config.task_weights)
    halves = torch.randperm(len(train), generator=generator)
    weight_half, policy_half = halves[: len(train) // 2], halves[len(train) // 2:]
    w_opt = sgd(net, config)
    p_opt = torch.optim.Adam([net.policy_logits], lr=config.optim.policy_lr, weight_decay=0)
    bs = config.data.batch_size
    for epoch in range(cfg.warmup_epochs):  # warm-up: hard sharing, weights only
        losses = [weight_step(net, w_opt, x, t, None, weights) for x, t in batches(train, weight_half, bs, generator)]
        log.append({"phase": "warmup", "epoch": epoch, "loss": float(np.mean(losses))})
    tau = cfg.tau
    for epoch in range(cfg.search_epochs):
        learnable = learnable_blocks(epoch, cfg.curriculum_speed, net.num_blocks)
        w_losses = []
        for x, t in batches(train, weight_half, bs, generator):
            with torch.no_grad():
                u = apply_curriculum(gumbel_policy(net.policy_logits, tau, generator=generator), learnable)
            w_losses.append(weight_step(net, w_opt, x, t, u, weights))
        p_losses = [policy_step(net, p_opt, x, t, tau, learnable, cfg, weights, generator)
                    for x, t in batches(train, policy_half, bs, generator)]
        tau *= cfg.tau_decay
        log.append({"phase": "search", "epoch": epoch, "learnable": learnable, "tau": tau,
                    "weight_loss": float(np.mean(w_losses)), "policy_loss": float(np.mean(p_losses)),
                    "p_execute": execute_probability(net.policy_logits).tolist()})
    set_phase(net, "weights")
    candidates = [execute_probability(net.policy_logits.detach()) >= 0.5]
    candidates += [sample_discrete(net.policy_logits, generator) for _ in range(cfg.samples)]
    scored = [(policy_loss(net, train, policy_half, policy_tensor(c), weights), i) for i, c in enumerate(candidates)]
    best_loss, best = min(scored)
    log.append({"phase": "select", "candidate_losses": [s for s, _ in scored], "chosen": best,
                "chosen_loss": best_loss})
    return candidates[best]


# ---- one run -----------------------------------------------------------------------------------------------

def run(config: DictConfig) -> dict[str, Any]:
    """Train and test one method with one seed; writes ``results.json`` (and final weights) to the run dir."""
    check_config(config)
    check_writable("out_dir", config.out_dir)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    tasks = list(config.tasks)
    train, test = scenes_data(config.data, tasks)
    run_dir = new_run_dir(config)  # created by the first file written into it
    log: list[dict] = []
    start = time.perf_counter()
    result: dict[str, Any] = {"method": config.method, "seed": config.seed, "tasks": tasks}
    if config.method == "single":
        metrics, params, states = {}, 0, {}
        for task in tasks:
            net = build_net(config, [task])
            fit(net, train, config, None, generator, log)
            metrics.update(evaluate(net, test, None))
            params += executed_params(net)
            states[task] = net.state_dict()
        result.update(metrics=metrics, params=params, executed_blocks={t: net.num_blocks for t in tasks},
                      num_blocks=net.num_blocks)
        atomic_torch_save(states, run_dir / "weights.pt")
    else:
        net = build_net(config, tasks)
        execute = None
        if config.method == "adashare":
            execute = search(net, train, config, generator, log)
            result["policy_logits"] = net.policy_logits.detach().tolist()
            result["p_execute"] = execute_probability(net.policy_logits.detach()).tolist()
            net = build_net(config, tasks)  # re-train from scratch with the chosen policy
        elif config.method == "random":
            counts = list(config.random.counts) or [net.num_blocks // 2] * len(tasks)
            if len(counts) != len(tasks):
                raise LeannetError(f"random.counts needs one count per task ({len(tasks)}), got {counts}")
            execute = random_policy(counts, net.num_blocks, generator)
        policy = None if execute is None else policy_tensor(execute)
        fit(net, train, config, policy, generator, log)
        result.update(metrics=evaluate(net, test, policy), params=executed_params(net, execute),
                      num_blocks=net.num_blocks)
        full = torch.ones(len(tasks), net.num_blocks, dtype=torch.bool) if execute is None else execute
        result["policy"] = full.int().tolist()
        result["executed_blocks"] = {t: int(full[i].sum()) for i, t in enumerate(tasks)}
        atomic_torch_save({"state_dict": net.state_dict(), "policy": full}, run_dir / "weights.pt")
    result["run_dir"] = str(run_dir)
    result["seconds"] = time.perf_counter() - start
    result["log"] = log
    result["config"] = OmegaConf.to_container(config, resolve=True)
    (run_dir / "results.json").write_text(json.dumps(result, indent=1, default=_json_default))
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
