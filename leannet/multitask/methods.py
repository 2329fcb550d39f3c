"""Multi-task methods on the shared trainer: hard sharing / fixed policies (``multitask``), AdaShare's
policy search (``adashare_search``) and the whole AdaShare recipe (``adashare``: search, then re-train).

A batch is ``(images, {task: target})`` from a dense dataset (``leannet.data.dense``); the model is an
:class:`AdaShareNet` (registered as ``adashare_resnet``; its heads come from the data's tasks). Each method
evaluates with the per-task metrics of ``leannet.multitask.metrics`` and keeps the best checkpoint by
the weighted validation loss.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from leannet.errors import LeannetError
from leannet.method import Method, register_method
from leannet.models.factory import register_model
from leannet.multitask.adashare import (
    LOSS_FORMS,
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
from leannet.runio import write_json

BALANCING = ("none", "grad_norm")


@register_model("adashare_resnet")
def adashare_resnet(*, num_classes: int, in_channels: int, norm: str, width: float,
                    tasks: dict[str, int] | None = None, widths: Iterable[int] = (16, 32, 64),
                    blocks: Iterable[int] = (2, 2, 2), strides: Iterable[int] = (1, 2, 2),
                    head_dilations: Iterable[int] = (1, 2, 3)) -> AdaShareNet:
    """AdaShare's backbone of gated basic blocks with one dense head per task of the data (``tasks``)."""
    if not tasks:
        raise LeannetError("model adashare_resnet needs a dense multi-task dataset (e.g. data.name=scenes_tasks)")
    scaled = tuple(max(1, round(w * width)) for w in widths)
    return AdaShareNet(dict(tasks), scaled, tuple(blocks), tuple(strides), in_channels, tuple(head_dilations), norm)


@register_method("multitask")
class MultiTask(Method):
    """Σ_k λ_k L_k over the tasks of an :class:`AdaShareNet` under a fixed policy (AdaShare eq. 1 with u ∈ {0,1}).

    ``policy``: None executes every block for every task (hard sharing); a K×L list of 0/1 is a
    hand-written (or searched) policy; ``random_blocks`` [c_1..c_K] draws a random policy executing c_k
    blocks of task k (from the run's seed); ``random_like`` (a run folder, ``{seed}`` filled with the run's
    seed) draws one with the block counts of that finished run (AdaShare's matched random control).
    ``task_weights`` {task: λ_k} (default 1). ``balance:
    grad_norm`` multiplies them, once at the start of training, by mean_k(g)/g_k with g_k the norm of
    task k's gradient on the stem under hard sharing (summed over ``balance_batches`` batches), so that no
    task's gradient dominates the shared trunk; measured under hard sharing whatever the run's policy, so
    every variant of one seed (same initial weights, same batches) gets the same weights.
    ``drop_rate`` > 0 is stochastic depth (Huang et al. 2016; AdaShare's ablation baseline): in every training
    step block l is skipped by every task with probability p_l = drop_rate·(l+1)/L; evaluation executes the policy
    with each block's residual branch scaled by its survival probability 1 − p_l (Huang et al., eq. 5), so its
    expected training output is what the test sees.
    """

    monitor = ("loss", "min")

    def __init__(self, model: nn.Module, num_classes: int, *, policy: list | None = None,
                 random_blocks: list | None = None, random_like: str = "", task_weights: dict | None = None,
                 balance: str = "none", balance_batches: int = 4, drop_rate: float = 0.0) -> None:
        super().__init__(model, num_classes)
        if not 0 <= drop_rate < 1:
            raise LeannetError(f"method.drop_rate must be in [0, 1), got {drop_rate}")
        self.drop_rate = drop_rate
        if random_like and random_blocks is None:
            raise LeannetError("method.random_like is resolved when the run starts (leannet train / suite)")
        if not isinstance(model, AdaShareNet):
            raise LeannetError(f"method {type(self).__name__.lower()} needs model.name=adashare_resnet, "
                               f"got a {type(model).__name__}")
        for block, drop in zip(model.blocks, self.drop_probabilities(model.num_blocks).tolist(), strict=True):
            block.residual_scale = 1 - drop
        if balance not in BALANCING:
            raise LeannetError(f"unknown method.balance '{balance}'; valid: {', '.join(BALANCING)}")
        self.tasks = list(model.task_names)
        self.specs = {s.name: s for s in task_specs(self.tasks)}
        weights = dict(task_weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise LeannetError(f"method.task_weights names {unknown}, not tasks of the data ({', '.join(self.tasks)})")
        self.register_buffer("task_weight", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))
        self.register_buffer("balanced", torch.tensor(balance == "none"))
        self.balance_batches = balance_batches
        self.register_buffer("execute", self._fixed_policy(policy, random_blocks))
        self._fixed_u: tuple[Tensor, Tensor | None] | None = None
        model.policy_logits.requires_grad_(False)  # a fixed policy: the logits are not trained
        self.unused_parameters = not bool(self.execute.any(0).all())  # a block no task runs gets no gradient

    @classmethod
    def prepare(cls, config: DictConfig, run_dir: Path) -> DictConfig:
        """Resolve ``random_like``: the executed blocks per task of that run's results.json."""
        like = config.method.get("random_like")
        if not like or config.method.get("random_blocks") is not None:
            return config
        from leannet.config import merge_recipe

        source = Path(str(like).replace("{seed}", str(config.seed))) / "results.json"
        try:
            other = json.loads(source.read_text())
            counts = [int(other["executed_blocks"][t]) for t in other["tasks"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise LeannetError(f"method.random_like: cannot read the executed blocks of {source} ({error}); "
                               "train that run first") from None
        return merge_recipe(config, {"method": {"random_blocks": counts}}, source="method.random_like")

    def _fixed_policy(self, policy: list | None, random_blocks: list | None) -> Tensor:
        k, num_blocks = len(self.tasks), self.model.num_blocks
        if policy is not None and random_blocks is not None:
            raise LeannetError("set method.policy or method.random_blocks, not both")
        if random_blocks is not None:
            if len(random_blocks) != k:
                raise LeannetError(f"method.random_blocks needs one count per task ({k}), got {list(random_blocks)}")
            seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from the run's seed
            return random_policy([int(c) for c in random_blocks], num_blocks, torch.Generator().manual_seed(seed))
        if policy is None:
            return torch.ones(k, num_blocks, dtype=torch.bool)
        execute = torch.tensor(policy)
        if execute.shape != (k, num_blocks) or not bool(((execute == 0) | (execute == 1)).all()):
            raise LeannetError(f"method.policy must be {k} rows (tasks {', '.join(self.tasks)}) of {num_blocks} "
                               f"0/1 entries (1 = execute the block), got {policy}")
        return execute.bool()

    def policy(self) -> Tensor | None:
        """The u [K, L, 2] the network runs with (None: every block, the shared fast path)."""
        if self._fixed_u is None or self._fixed_u[0] is not self.execute:  # read the buffer once, not every step
            u = None if bool(self.execute.all()) else policy_tensor(self.execute).to(self.task_weight)
            self._fixed_u = (self.execute, u)
        return self._fixed_u[1]

    def task_loss(self, outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Σ_k λ_k L_k and the unweighted L_k."""
        parts = {t: self.specs[t].loss(outputs[t].float(), targets[t]) for t in self.tasks}
        return sum(w * parts[t] for w, t in zip(self.task_weight, self.tasks, strict=True)), parts

    def train_policy(self) -> Tensor | None:
        """The policy of one training step: the fixed one, with blocks dropped at random (``drop_rate``)."""
        if self.drop_rate == 0:
            return self.policy()
        p_drop = self.drop_probabilities(self.model.num_blocks)
        keep = torch.rand(len(p_drop)) >= p_drop
        return policy_tensor(self.execute.cpu() & keep).to(self.task_weight)

    def drop_probabilities(self, num_blocks: int) -> Tensor:
        """Stochastic depth's linear decay: p_l = drop_rate·(l+1)/L for blocks l = 0..L-1."""
        return self.drop_rate * torch.arange(1, num_blocks + 1) / num_blocks

    def forward(self, batch: tuple[Tensor, dict[str, Tensor]]) -> dict[str, Tensor]:
        x, targets = batch
        loss, parts = self.task_loss(self.model(x, self.train_policy()), targets)
        return {"loss": loss, **{f"loss_{t}": v.detach() for t, v in parts.items()}}

    def eval_metrics(self) -> dict[str, Any]:
        return {t: task_metric(t, self.model.heads[t].branches[0][-1].out_channels) for t in self.tasks}

    def evaluate(self, batch: tuple[Tensor, dict[str, Tensor]], metrics: dict[str, Any]) -> dict[str, Tensor]:
        x, targets = batch
        outputs = self.model(x, self.eval_policy())
        for t in self.tasks:
            metrics[t].update(outputs[t].float(), targets[t])
        loss, parts = self.task_loss(outputs, targets)
        return {"loss": loss, **{f"loss_{t}": v for t, v in parts.items()}}

    def eval_policy(self) -> Tensor | None:
        return self.policy()

    def fit_start(self, batches: Iterable[tuple[Tensor, dict[str, Tensor]]]) -> None:
        """``balance: grad_norm``: scale λ_k by mean(g)/g_k (once; a resumed run keeps its weights)."""
        if bool(self.balanced):
            return
        shared = [p for p in self.model.stem.parameters() if p.requires_grad]  # every task runs it, any policy
        norms = torch.zeros(len(self.tasks))
        for i, (x, targets) in enumerate(batches):
            if i == self.balance_batches:
                break
            _, parts = self.task_loss(self.model(x), targets)  # hard sharing: the same for every policy
            for k, t in enumerate(self.tasks):
                grads = torch.autograd.grad(parts[t], shared, retain_graph=k < len(self.tasks) - 1, allow_unused=True)
                norms[k] += torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)).item()
        self.model.zero_grad(set_to_none=True)
        scale = norms.mean() / norms.clamp_min(1e-12)
        self.task_weight.mul_(scale.to(self.task_weight))
        self.balanced.fill_(True)
        print("task weights (grad_norm): " + ", ".join(f"{t} {float(w):.3g}" for t, w in
                                                       zip(self.tasks, self.task_weight, strict=True)), flush=True)

    def summary(self) -> dict[str, Any]:
        execute = self.execute.cpu()
        return {"tasks": self.tasks, "policy": execute.int().tolist(),
                "executed_blocks": {t: int(execute[k].sum()) for k, t in enumerate(self.tasks)},
                "num_blocks": self.model.num_blocks, "deployed_params": executed_params(self.model, execute),
                "task_weights": dict(zip(self.tasks, self.task_weight.tolist(), strict=True))}


SEARCH_KEYS = ("warmup_epochs", "search_epochs", "tau", "tau_decay", "tau_final", "sparsity", "sparsity_form",
               "sharing", "sharing_form", "curriculum_speed", "skip_layer", "policy_lr", "policy_weight_decay",
               "init_noise", "split_seed", "init_from")
FINAL_POLICIES = ("argmax", "sample", "best_of_samples")
SEARCH_OPTIM = {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4}
"""The network's optimizer during the search in the official code (SGD 0.9, lr 1e-3, weight decay 1e-4)."""


@register_method("adashare_search")
class AdaShareSearch(MultiTask):
    """AdaShare's warm-up and policy search (Sun et al. 2020, §3.3) as one training run.

    Epochs: ``warmup_epochs`` of hard sharing on the weight half, or none when ``init_from`` names a finished
    hard-sharing run (trained on the whole split) whose final weights and task weights start the search;
    then ``search_epochs`` × (one epoch of network weights with the policy frozen, one epoch of policy
    logits with the weights frozen) on disjoint halves of the training set (``split_seed``). The policy has
    its own Adam optimizer (``policy_lr``, ``policy_weight_decay``, as the official code).

    During search u = Gumbel-softmax(α, τ) with τ = ``tau``·``tau_decay``^s in search epoch s, or, with
    ``tau_final``, the geometric schedule from ``tau`` to ``tau_final`` over the search. The curriculum
    forces all but the last (s // ``curriculum_speed`` + 1) blocks to execute, and the first ``skip_layer``
    blocks always execute (the official ``skip_layer``). Policy loss: Σ_k λ_k L_k + λ_sp·L_sparsity +
    λ_sh·L_sharing (``sparsity_form`` and ``sharing_form`` ``official`` or ``paper``, see ``sparsity_loss``
    and ``sharing_loss``). ``init_noise`` adds N(0, σ²) to the tied initial logits to break the symmetry.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, warmup_epochs: int = 2, search_epochs: int = 40,
                 tau: float = 5.0, tau_decay: float = 0.965, tau_final: float | None = 0.05,
                 sparsity: float = 0.001, sparsity_form: str = "official", sharing: float = 0.05,
                 sharing_form: str = "official", curriculum_speed: int = 1, skip_layer: int = 0,
                 policy_lr: float = 0.01, policy_weight_decay: float = 5e-4, init_noise: float = 0.01,
                 split_seed: int = 0, init_from: str = "", task_weights: dict | None = None,
                 balance: str = "none", balance_batches: int = 4) -> None:
        super().__init__(model, num_classes, task_weights=task_weights, balance=balance,
                         balance_batches=balance_batches)
        for key, form in (("sharing_form", sharing_form), ("sparsity_form", sparsity_form)):
            if form not in LOSS_FORMS:
                raise LeannetError(f"unknown method.{key} '{form}'; valid: {', '.join(LOSS_FORMS)}")
        if tau <= 0 or (tau_final is not None and not 0 < tau_final <= tau):
            raise LeannetError(f"method.tau must be > 0 and tau_final in (0, tau]; got {tau} and {tau_final}")
        if curriculum_speed < 1 or search_epochs < 1 or warmup_epochs < 0:
            raise LeannetError("method.search_epochs and curriculum_speed must be >= 1, warmup_epochs >= 0")
        if not 0 <= skip_layer < model.num_blocks:
            raise LeannetError(f"method.skip_layer must be in 0..{model.num_blocks - 1} (blocks always executed), "
                               f"got {skip_layer}")
        if init_from and warmup_epochs:
            raise LeannetError("method.init_from (a finished hard-sharing run) replaces the warm-up: "
                               "set method.warmup_epochs=0")
        self.warmup_epochs, self.search_epochs = warmup_epochs, search_epochs
        self.tau0, self.tau_decay, self.tau_final = tau, tau_decay, tau_final
        self.sparsity, self.sparsity_form = sparsity, sparsity_form
        self.sharing, self.sharing_form = sharing, sharing_form
        self.curriculum_speed, self.skip_layer, self.split_seed = curriculum_speed, skip_layer, split_seed
        self.policy_lr, self.policy_weight_decay = policy_lr, policy_weight_decay
        if init_from:
            self._start_from(Path(init_from))
        if init_noise > 0:
            with torch.no_grad():
                model.policy_logits.add_(init_noise * torch.randn_like(model.policy_logits))
        self.phase, self.search_epoch = "warmup", 0
        self.unused_parameters = True  # the logits in weight epochs, the weights in policy epochs
        model.policy_logits.requires_grad_(True)
        self._policy_optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def prepare(cls, config: DictConfig, run_dir: Path) -> DictConfig:
        """``{seed}`` in ``init_from`` becomes the run's seed."""
        from leannet.config import merge_recipe

        source = str(config.method.get("init_from") or "")
        if "{seed}" not in source:
            return config
        return merge_recipe(config, {"method": {"init_from": source.replace("{seed}", str(config.seed))}},
                            source="method.init_from")

    def _start_from(self, run: Path) -> None:
        """The warm-up's result: network weights and task weights of a finished hard-sharing run."""
        from leannet.runio import safe_torch_load

        checkpoint = run / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise LeannetError(f"method.init_from: {checkpoint} not found; train the hard-sharing run {run} first "
                               "(its checkpoints are not published, so a published copy does not count)")
        state = safe_torch_load(checkpoint).get("state_dict", {})
        prefix = "method.model."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not k.endswith("logits")}
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if [k for k in missing if k != "policy_logits"] or unexpected or "method.task_weight" not in state:
            raise LeannetError(f"method.init_from: {checkpoint} is not a multi-task run of this network "
                               f"({len(missing)} tensors missing, {len(unexpected)} unexpected)")
        self.task_weight.copy_(state["method.task_weight"])
        self.balanced.fill_(True)

    @staticmethod
    def length(warmup_epochs: int, search_epochs: int) -> int:
        """The epochs a search takes (its run's trainer.max_epochs): warm-up, then a weight and a policy
        epoch per search epoch."""
        return warmup_epochs + 2 * search_epochs

    @property
    def epochs(self) -> int:
        return self.length(self.warmup_epochs, self.search_epochs)

    def tau(self, search_epoch: int) -> float:
        if self.tau_final is None:
            return self.tau0 * self.tau_decay ** search_epoch
        return self.tau0 * (self.tau_final / self.tau0) ** (search_epoch / max(self.search_epochs - 1, 1))

    def learnable(self) -> int:
        curriculum = learnable_blocks(self.search_epoch, self.curriculum_speed, self.model.num_blocks)
        return min(curriculum, self.model.num_blocks - self.skip_layer)

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._policy_optimizer is None:
            self._policy_optimizer = torch.optim.Adam([self.model.policy_logits], lr=self.policy_lr,
                                                      weight_decay=self.policy_weight_decay)
        return {"policy": self._policy_optimizer}

    def phase_of(self, epoch: int) -> tuple[str, int]:
        """(warmup | weights | policy, search epoch) of training epoch ``epoch``."""
        j = epoch - self.warmup_epochs
        return ("warmup" if j < 0 else ("weights", "policy")[j % 2]), max(j, 0) // 2

    def train_subset(self, epoch: int, size: int) -> Tensor:
        """Warm-up and weight epochs train on one half of the training set, policy epochs on the other (the
        AdaShare recipe warms up on the whole split instead: a hard-sharing run, ``init_from``)."""
        halves = torch.randperm(size, generator=torch.Generator().manual_seed(self.split_seed))
        return halves[size // 2:] if self.phase_of(epoch)[0] == "policy" else halves[: size // 2]

    def start_epoch(self, epoch: int) -> None:
        """Freeze the policy (warm-up, weight epochs) or the weights (policy epochs)."""
        self.phase, self.search_epoch = self.phase_of(epoch)
        for p in self.model.weight_parameters():
            p.requires_grad_(self.phase != "policy")
        self.model.policy_logits.requires_grad_(self.phase == "policy")

    def sampled_policy(self) -> Tensor:
        u = gumbel_policy(self.model.policy_logits, self.tau(self.search_epoch))
        return apply_curriculum(u, self.learnable())

    def forward(self, batch: tuple[Tensor, dict[str, Tensor]]) -> dict[str, Tensor]:
        x, targets = batch
        if self.phase == "warmup":
            return super().forward(batch)
        logits = self.model.policy_logits
        if self.phase == "weights":
            loss, parts = self.task_loss(self.model(x, self.sampled_policy().detach()), targets)
            out = {"loss": loss, "optimizer": ""}
        else:
            loss, parts = self.task_loss(self.model(x, self.sampled_policy()), targets)
            sp = sparsity_loss(logits, self.learnable(), self.sparsity_form)
            sh = sharing_loss(logits, self.sharing_form)
            loss = loss + self.sparsity * sp + self.sharing * sh
            out = {"loss": loss, "optimizer": "policy", "sparsity": sp.detach(), "sharing": sh.detach()}
        p = execute_probability(logits.detach())
        out |= {f"p_execute/{t}/{l}": p[k, l] for k, t in enumerate(self.tasks) for l in range(p.shape[1])}
        out["tau"] = torch.tensor(self.tau(self.search_epoch), device=logits.device)
        return out | {f"loss_{t}": v.detach() for t, v in parts.items()}

    def eval_policy(self) -> Tensor:
        """Validation during the search: the most probable discrete policy (curriculum applied)."""
        execute = execute_probability(self.model.policy_logits.detach()) >= 0.5
        return apply_curriculum(policy_tensor(execute).to(self.task_weight), self.learnable())

    def summary(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "p_execute": execute_probability(self.model.policy_logits.detach()).tolist(),
                "policy_logits": self.model.policy_logits.detach().tolist(), "task_weights":
                dict(zip(self.tasks, self.task_weight.tolist(), strict=True))}


@register_method("adashare")
class AdaShare(MultiTask):
    """The AdaShare recipe: warm-up, policy search, one discrete policy, re-train from scratch.

    Defaults follow the official code (sunxm2357/AdaShare): λ_sp 0.001 / λ_sh 0.05 (NYU-v2 3-task), the
    official forms of both losses (sparsity summed over tasks, sharing on the execute column), network on
    SGD 0.9 during the search (``search_optim``), policy Adam 0.01 with weight decay 5e-4, τ from 5 to 0.05
    over ``search_epochs`` 40, and ``final: argmax``, the most probable policy of the converged distribution.
    ``final: sample`` draws one policy from softmax(α) (the official code; its paper reports the best of 8
    re-trained samples on the test set, which we do not do); ``final: best_of_samples`` (not in the official
    code) scores the argmax and ``samples`` draws by weighted task loss on the validation split (``select_on:
    val``, or ``policy_half``) with the search network.

    Without ``policy`` one command runs the warm-up (a hard-sharing run of the recipe on the whole training split
    into ``RUN_DIR/warmup``, or the finished one named by ``init_from``; ``warmup_epochs`` > 0 warms up inside
    the search on the weight half instead, as ``adashare_search`` alone does), the search
    (``adashare_search`` with this method's search keys, ``search_batch_size`` images a step) into
    ``RUN_DIR/search``, writes the choice to ``RUN_DIR/search/policy.json``, then trains a freshly initialised
    network with that fixed policy (the recipe's ``trainer.max_epochs``). With ``policy`` set it is the
    fixed-policy re-train alone. ``search_p_execute`` (filled by the search) is the p(execute) grid at its end.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, policy: list | None = None,
                 final: str = "argmax", samples: int = 8, select_on: str = "val", search_optim: dict | None = None,
                 search_batch_size: int | None = None, warmup_epochs: int = 0, search_epochs: int = 40,
                 tau: float = 5.0, tau_decay: float = 0.965, tau_final: float | None = 0.05,
                 sparsity: float = 0.001, sparsity_form: str = "official", sharing: float = 0.05,
                 sharing_form: str = "official", curriculum_speed: int = 1, skip_layer: int = 0,
                 policy_lr: float = 0.01, policy_weight_decay: float = 5e-4, init_noise: float = 0.01,
                 split_seed: int = 0, init_from: str = "", task_weights: dict | None = None,
                 balance: str = "none", balance_batches: int = 4, drop_rate: float = 0.0,
                 search_p_execute: list | None = None) -> None:
        # the search keys are accepted (so a recipe is validated whole) and read by prepare(), not here
        super().__init__(model, num_classes, policy=policy, task_weights=task_weights, balance=balance,
                         balance_batches=balance_batches, drop_rate=drop_rate)
        if final not in FINAL_POLICIES:
            raise LeannetError(f"unknown method.final '{final}'; valid: {', '.join(FINAL_POLICIES)}")
        if select_on not in ("val", "policy_half"):
            raise LeannetError(f"unknown method.select_on '{select_on}'; valid: val, policy_half")
        self.search_p_execute = search_p_execute

    def summary(self) -> dict[str, Any]:
        return super().summary() | {"search_p_execute": self.search_p_execute}

    @classmethod
    def prepare(cls, config: DictConfig, run_dir: Path) -> DictConfig:
        """Stage 1 (search) and the policy choice when ``method.policy`` is unset."""
        if config.method.get("policy") is not None:
            return config
        from leannet.config import merge_recipe

        chosen, p_execute = search_policy(config, Path(run_dir) / "search")
        return merge_recipe(config, {"method": {"policy": chosen, "search_p_execute": p_execute}},
                            source="adashare stage 2")


def search_config(config: DictConfig) -> dict[str, Any]:
    """The recipe of an AdaShare run's search stage: ``adashare_search`` with the run's search keys, the search
    optimizer (``search_optim`` over the recipe's, SGD 0.9 by default), a constant learning rate, and no
    warm-up epochs when ``init_from`` supplies the warmed-up network."""
    from leannet.config import to_dict

    method = to_dict(config.method)
    search = {"name": "adashare_search", **{k: method[k] for k in (*SEARCH_KEYS, "task_weights", "balance",
                                                                   "balance_batches") if k in method}}
    if search.get("init_from"):
        search["init_from"] = str(search["init_from"]).replace("{seed}", str(config.seed))
        search["warmup_epochs"] = 0
    keys = AdaShareSearch.__init__.__kwdefaults__ | search
    first = to_dict(config)
    first.update(name=f"{config.name}_search", method=search)
    first["trainer"] = {**first["trainer"], "max_epochs": AdaShareSearch.length(keys["warmup_epochs"],
                                                                                keys["search_epochs"])}
    first["schedule"] = {**first["schedule"], "name": "constant", "warmup_epochs": 0}
    first["optim"] = {**first["optim"], **SEARCH_OPTIM, **(method.get("search_optim") or {})}
    if method.get("search_batch_size"):
        first["data"] = {**first["data"], "batch_size": int(method["search_batch_size"])}
    return first


def warm_up(config: DictConfig, run_dir: Path) -> Path:
    """Stage 0: hard sharing with the recipe's optimizer and epochs on the whole training split (or reuse it)."""
    from leannet.config import merge_recipe, to_dict
    from leannet.train.run import train

    if not (run_dir / "results.json").is_file():
        method = to_dict(config.method)
        warm = to_dict(config)
        warm.update(name=f"{config.name}_warmup", method={"name": "multitask", **{
            k: method[k] for k in ("task_weights", "balance", "balance_batches") if k in method}})
        print(f"adashare stage 0/2: warm-up by hard sharing in {run_dir}", flush=True)
        train(merge_recipe(warm, source="adashare warm-up"), run_dir=run_dir,
              resume=(run_dir / "checkpoints" / "last.ckpt").is_file())
    return run_dir


def search_policy(config: DictConfig, stage: Path) -> tuple[list[list[int]], list[list[float]]]:
    """Run (or reuse) the search in ``stage`` and choose the discrete policy (``method.final``); returns it
    (K×L 0/1) and the final p(execute) grid."""
    from leannet.config import merge_recipe
    from leannet.train.run import load_trained, train

    record = stage / "policy.json"
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
            return saved["chosen"], saved["p_execute"]
        except (ValueError, KeyError) as error:
            raise LeannetError(f"{record} is corrupt ({error}); delete it to choose the policy again") from None
    if not config.method.get("init_from") and not config.method.get("warmup_epochs", 0):
        warmup = warm_up(config, stage.parent / "warmup")
        config = merge_recipe(config, {"method": {"init_from": str(warmup)}}, source="adashare warm-up")
    first = search_config(config)
    if not (stage / "results.json").is_file():
        print(f"adashare stage 1/2: policy search ({first['trainer']['max_epochs']} epochs) in {stage}", flush=True)
        train(merge_recipe(first, source="adashare stage 1"), run_dir=stage,
              resume=(stage / "checkpoints" / "last.ckpt").is_file())
    _, built = load_trained(stage, "last")
    searcher: AdaShareSearch = built.method
    logits = searcher.model.policy_logits.detach()
    always = searcher.model.num_blocks - searcher.skip_layer  # blocks the policy may skip: the last ones
    generator = torch.Generator().manual_seed(int(config.seed))
    final = config.method.get("final", "argmax")
    candidates = [execute_probability(logits) >= 0.5]
    if final != "argmax":
        draws = 1 if final == "sample" else int(config.method.get("samples", 8))
        candidates = ([] if final == "sample" else candidates) + [sample_discrete(logits, generator)
                                                                  for _ in range(draws)]
    candidates = [apply_curriculum(policy_tensor(c), always)[..., 0].bool() for c in candidates]
    losses: list[float] = []
    best = 0
    if final == "best_of_samples":
        select_on = config.method.get("select_on", "val")
        loader = built.loaders.val if select_on == "val" else built.loaders.train
        if loader is None:
            raise LeannetError("method.select_on=val needs a validation split: set data.val_size > 0 "
                               "(or method.select_on=policy_half)")
        if select_on == "policy_half":
            loader.set_subset(searcher.train_subset(searcher.warmup_epochs + 1, loader.num_items))
        losses = [policy_loss(searcher, loader, c) for c in candidates]
        best = min(range(len(candidates)), key=losses.__getitem__)
    chosen = candidates[best].int().tolist()
    stage.mkdir(parents=True, exist_ok=True)
    write_json(record, {"tasks": searcher.tasks, "final": final, "chosen": chosen, "chosen_index": best,
                        "candidates": [c.int().tolist() for c in candidates], "losses": losses,
                        "p_execute": execute_probability(logits).tolist(),
                        "p_execute_per_epoch": search_trajectory(stage, searcher)})
    print(f"adashare stage 2/2: policy {chosen} ({final}); re-training", flush=True)
    return chosen, execute_probability(logits).tolist()


def search_trajectory(stage: Path, searcher: AdaShareSearch) -> list[list[list[float]]]:
    """p(execute) [epoch][task][block] after every policy epoch of the search in ``stage``: the (frozen) values
    logged in the weight epoch that follows it (its metrics.csv), and the final logits for the last one."""
    from leannet.runio import epoch_metrics

    tasks, blocks = searcher.tasks, range(searcher.model.num_blocks)
    after = [r for r in epoch_metrics(stage) if searcher.phase_of(int(r["epoch"]))[0] == "weights"
             and searcher.phase_of(int(r["epoch"]))[1] >= 1]
    rows = [[[float(r[f"train/p_execute/{t}/{l}"]) for l in blocks] for t in tasks] for r in after]
    return rows + [execute_probability(searcher.model.policy_logits.detach()).tolist()]


@torch.no_grad()
def policy_loss(method: MultiTask, loader: Iterable, execute: Tensor) -> float:
    """Mean weighted task loss of the discrete policy ``execute`` (bool K×L) over ``loader`` (eval mode)."""
    method.eval()
    u = policy_tensor(execute).to(method.task_weight)
    total, count = 0.0, 0
    for x, targets in loader:
        loss, _ = method.task_loss(method.model(x, u), targets)
        total += float(loss) * len(x)
        count += len(x)
    return total / count if count else math.nan
