"""The KD family as recipe methods: `kd`, `tfkd_self`, `tfkd_reg` (LSR is `lsr` in leannet.distill.lsr).

Yuan et al., "Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020.
Re-KD (a weaker teacher) and De-KD (a teacher saved after a few epochs, `trainer.save_epochs`) are
`kd` recipes, not code. The losses are the pure functions of `leannet.distill.losses`; `multiplier`
m = 1 is the equation. The official code's multipliers were tuned for a KL averaged over N·K entries
(PyTorch's `KLDivLoss()` 'mean'), so they convert as m = m_official / K with the dataset's own K:
give `official_multiplier` and the method divides by its number of classes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from leannet.config import ModelConfig, load_recipe, merge_recipe, to_dict
from leannet.distill.losses import kd_loss, tfkd_reg_loss
from leannet.errors import LeannetError
from leannet.method import Method, register_method
from leannet.models import build_model
from leannet.norm.recalibrate import reestimate_bn
from leannet.runio import safe_torch_load


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """The model's weights from a leannet/Lightning checkpoint or a bare `state_dict`.

    Strips the `method.model.` prefix of leannet checkpoints, `module.` of DDP-saved state dicts and
    `_orig_mod.` of compiled models.
    """
    state = checkpoint.get("state_dict", checkpoint)
    if any(key.startswith("method.model.") for key in state):
        state = {key[len("method.model."):]: value for key, value in state.items() if key.startswith("method.model.")}
    clean = {}
    for key, value in state.items():
        key = key.removeprefix("module.").replace("_orig_mod.", "")
        clean[key] = value
    return clean


def _model_config(model: dict[str, Any]) -> DictConfig:
    if not isinstance(model, dict) or "name" not in model:
        raise LeannetError(f"method.teacher_model must be a model section such as {{name: resnet20}}, got {model!r}")
    try:
        return OmegaConf.merge(OmegaConf.structured(ModelConfig), model)
    except OmegaConfBaseException as err:
        raise LeannetError(f"bad method.teacher_model {model!r}: {str(err).splitlines()[0]}") from None


def resolve_teacher(
    teacher: str, checkpoint: str = "last", model: dict[str, Any] | None = None
) -> tuple[DictConfig, dict[str, Tensor], Path]:
    """Find a teacher's model section, weights and checkpoint path.

    `teacher` is a leannet run directory (its `checkpoints/<checkpoint>.ckpt`: last, best, epochN) or
    a checkpoint file. The model section comes from `model` when given, else from the run's
    `config.yaml` (beside the `checkpoints/` folder of a file).
    """
    path = Path(teacher)
    if path.is_dir():
        ckpt, config_path = path / "checkpoints" / f"{checkpoint}.ckpt", path / "config.yaml"
        if not ckpt.is_file():
            found = sorted(p.stem for p in (path / "checkpoints").glob("*.ckpt"))
            raise LeannetError(
                f"teacher checkpoint {ckpt} not found; method.teacher_checkpoint can be one of: "
                f"{', '.join(found) or '(none: has the teacher run finished an epoch?)'}"
            )
    elif path.is_file():
        ckpt = path
        config_path = path.parent.parent / "config.yaml" if path.parent.name == "checkpoints" else None
    else:
        raise LeannetError(
            f"teacher '{teacher}' not found; set method.teacher to a run directory (runs/NAME) or a checkpoint file"
        )
    if model is not None:
        model_cfg = _model_config(model)
    elif config_path is not None and config_path.is_file():
        model_cfg = load_recipe(config_path).model
    else:
        raise LeannetError(
            f"no config.yaml beside teacher checkpoint {ckpt}; say which model it holds with "
            "method.teacher_model={name: MODEL, width: 1.0, norm: bn}"
        )
    return model_cfg, model_state_dict(safe_torch_load(ckpt)), ckpt


class FrozenTeacher:
    """A trained model used only for its outputs: eval mode, no gradients, never trained.

    Deliberately not an `nn.Module`: held as a plain attribute of a method, it stays outside the
    module tree, so the optimizer, checkpoints, parameter counts, `.train()` and DDP never see it.
    A teacher given by model section and weights is built on the first batch (taking its channels
    and image size) without touching the global random state; it follows the batch's device.
    """

    def __init__(
        self,
        module: nn.Module | None = None,
        *,
        model: DictConfig | None = None,
        state_dict: dict[str, Tensor] | None = None,
        num_classes: int | None = None,
        source: str = "teacher",
    ) -> None:
        if module is None and (model is None or state_dict is None or num_classes is None):
            raise LeannetError("FrozenTeacher needs a module, or a model section, weights and num_classes")
        self.model_cfg, self.state_dict, self.num_classes, self.source = model, state_dict, num_classes, source
        self.module = self._freeze(module) if module is not None else None

    @classmethod
    def from_path(
        cls, teacher: str, num_classes: int, checkpoint: str = "last", model: dict[str, Any] | None = None
    ) -> FrozenTeacher:
        """A teacher from a run directory or checkpoint file (see `resolve_teacher`)."""
        model_cfg, state, ckpt = resolve_teacher(teacher, checkpoint, model)
        return cls(model=model_cfg, state_dict=state, num_classes=num_classes, source=str(ckpt))

    @staticmethod
    def _freeze(module: nn.Module) -> nn.Module:
        module.eval()
        module.requires_grad_(False)
        return module

    def _build(self, x: Tensor) -> nn.Module:
        cfg = self.model_cfg
        with torch.random.fork_rng(devices=[]):
            module = build_model(
                cfg.name, num_classes=self.num_classes, in_channels=x.shape[1], norm=cfg.norm, width=cfg.width,
                image_size=tuple(x.shape[-2:]), **to_dict(cfg.args),
            )
        try:
            module.load_state_dict(self.state_dict)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:200]
            raise LeannetError(
                f"teacher weights {self.source} do not fit model '{cfg.name}' (width {cfg.width}, norm {cfg.norm}, "
                f"{self.num_classes} classes): {detail}"
            ) from None
        if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
            module = module.to(memory_format=torch.channels_last)
        return self._freeze(module)

    def __call__(self, x: Tensor) -> Tensor:
        """The teacher's logits for `x`, computed in eval mode under `no_grad`."""
        if self.module is None:
            self.module = self._build(x)
        parameter = next(self.module.parameters(), None)
        if parameter is not None and parameter.device != x.device:
            self.module.to(x.device)
        if self.module.training:
            self.module.eval()
        with torch.no_grad():
            return self.module(x)


def _check_weights(alpha: float, multiplier: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise LeannetError(f"method.alpha must be in [0, 1], got {alpha}")
    if multiplier < 0:
        raise LeannetError(f"method.multiplier must be >= 0, got {multiplier}")


def batch_mean_multiplier(multiplier: float, official_multiplier: float | None, num_classes: int) -> float:
    """The weight m on batch-mean KL: `multiplier`, or `official_multiplier` / K when that is given.

    The official Tf-KD code multiplies `KLDivLoss()` ('mean' over N·K entries) by m_official, i.e. it
    applies m_official / K to the batch-mean KL of the equations (papers/tfkd.md, "Trap").
    """
    if official_multiplier is None:
        return multiplier
    if official_multiplier < 0:
        raise LeannetError(f"method.official_multiplier must be >= 0, got {official_multiplier}")
    return official_multiplier / num_classes


TEACHER_BN = ("stored", "recompute")


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of softmax(logits) over the batch: H = −Σ_k p_k log p_k."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


@register_method("kd")
class KnowledgeDistillation(Method):
    """KD: (1−α)·CE(z, y) + α·m·T²·KL(softmax(t/T) ‖ softmax(z/T)) (Hinton et al. 2015; Tf-KD §4).

    `teacher`: a run directory (with `teacher_checkpoint`: last, best or epochN), a checkpoint file
    (with `teacher_model: {name: ...}` when no run config.yaml lies beside it), or, from Python, an
    `nn.Module` or `FrozenTeacher`; `{seed}` in the path becomes the run's seed. `teacher_bn: recompute`
    re-estimates the teacher's BatchNorm statistics on `teacher_bn_batches` training batches before
    training (`leannet.norm.reestimate_bn`; an early checkpoint's stored statistics make eval mode
    wrong). Logs `ce`, `kd` (the T²-scaled KL), `teacher_acc` and `teacher_entropy` (nats, T = 1) on
    the training batches, and prints both once when training starts.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        teacher: str | nn.Module | FrozenTeacher = "",
        teacher_checkpoint: str = "last",
        teacher_model: dict | None = None,
        alpha: float = 0.9,
        temperature: float = 4.0,
        multiplier: float = 1.0,
        official_multiplier: float | None = None,
        teacher_bn: str = "stored",
        teacher_bn_batches: int = 50,
    ) -> None:
        super().__init__(model, num_classes)
        multiplier = batch_mean_multiplier(multiplier, official_multiplier, num_classes)
        _check_weights(alpha, multiplier)
        if not temperature > 0:
            raise LeannetError(f"method.temperature must be > 0, got {temperature}")
        if teacher_bn not in TEACHER_BN:
            raise LeannetError(f"unknown method.teacher_bn '{teacher_bn}'; valid: {', '.join(TEACHER_BN)}")
        if teacher_bn_batches < 1:
            raise LeannetError(f"method.teacher_bn_batches must be >= 1, got {teacher_bn_batches}")
        self.alpha, self.temperature, self.multiplier = alpha, temperature, multiplier
        self.teacher_bn, self.teacher_bn_batches = teacher_bn, teacher_bn_batches
        self.teacher_stats: dict[str, float] = {}
        if isinstance(teacher, FrozenTeacher):
            self.teacher = teacher
        elif isinstance(teacher, nn.Module):
            self.teacher = FrozenTeacher(teacher)
        elif teacher:
            self.teacher = FrozenTeacher.from_path(str(teacher), num_classes, teacher_checkpoint, teacher_model)
        else:
            raise LeannetError(self.missing_teacher())

    def fit_start(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Re-estimate the teacher's BN statistics (`teacher_bn: recompute`), then report its accuracy and
        entropy on up to `teacher_bn_batches` training batches (one pass serves both)."""
        taken = list(itertools.islice(batches, self.teacher_bn_batches))
        if not taken:
            return
        if self.teacher.module is None:
            self.teacher.module = self.teacher._build(taken[0][0])
        if self.teacher_bn == "recompute":
            reestimate_bn(self.teacher.module, (x for x, _ in taken))
        with torch.no_grad():
            logits = torch.cat([self.teacher(x) for x, _ in taken])
        labels = torch.cat([y for _, y in taken])
        self.teacher_stats = {
            "teacher_train_acc": float((logits.argmax(dim=1) == labels).float().mean()),
            "teacher_train_entropy": float(entropy(logits)),
        }
        print(f"teacher {self.teacher.source}: accuracy {100 * self.teacher_stats['teacher_train_acc']:.2f} %, "
              f"entropy {self.teacher_stats['teacher_train_entropy']:.3f} nats on {len(labels)} training images "
              f"(BatchNorm statistics {self.teacher_bn})", flush=True)

    def summary(self) -> dict[str, float]:
        return dict(self.teacher_stats)

    def missing_teacher(self) -> str:
        return (
            "method 'kd' needs a teacher: method.teacher=RUN_DIR (a finished leannet run) or "
            "method.teacher=FILE.ckpt with method.teacher_model={name: MODEL}"
        )

    @classmethod
    def prepare(cls, config: DictConfig, run_dir: Path) -> DictConfig:
        """Fill `{seed}` in `method.teacher` with the run's seed (a suite's student seed s learns from teacher s)."""
        teacher = config.method.get("teacher")
        if isinstance(teacher, str) and "{seed}" in teacher:
            teacher = teacher.replace("{seed}", str(config.seed))
            return merge_recipe(config, {"method": {"teacher": teacher}}, source="method.teacher")
        return config

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        logits = self.model(x)
        teacher_logits = self.teacher(x)
        ce = F.cross_entropy(logits.float(), y)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        loss = (1.0 - self.alpha) * ce + self.alpha * self.multiplier * kd
        teacher_acc = (teacher_logits.argmax(dim=1) == y).float().mean()
        return {"loss": loss, "logits": logits, "ce": ce.detach(), "kd": kd.detach(), "teacher_acc": teacher_acc,
                "teacher_entropy": entropy(teacher_logits)}


@register_method("tfkd_self")
class TfKDSelf(KnowledgeDistillation):
    """Tf-KD_self: KD from an already trained copy of the student's own architecture (Tf-KD §5).

    Without `teacher`, one command runs two stages: the same recipe with plain cross-entropy into
    `RUN_DIR/teacher`, then this student distilled from it (its config.yaml records the teacher, so
    a resumed run does not repeat stage 1; an interrupted stage 1 is resumed by a suite, or with
    `leannet train --resume RUN_DIR/teacher`). Defaults: the paper's ResNet18 setting on CIFAR-100
    (α 0.95, T 6, m_official 50 → m 0.5). Both runs use the recipe's seed, as the official code does.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        teacher: str = "",
        teacher_checkpoint: str = "last",
        teacher_model: dict | None = None,
        alpha: float = 0.95,
        temperature: float = 6.0,
        multiplier: float = 0.5,
        official_multiplier: float | None = None,
        teacher_bn: str = "stored",
        teacher_bn_batches: int = 50,
    ) -> None:
        super().__init__(
            model, num_classes, teacher=teacher, teacher_checkpoint=teacher_checkpoint, teacher_model=teacher_model,
            alpha=alpha, temperature=temperature, multiplier=multiplier, official_multiplier=official_multiplier,
            teacher_bn=teacher_bn, teacher_bn_batches=teacher_bn_batches,
        )

    def missing_teacher(self) -> str:
        return "method 'tfkd_self' has no teacher: train it with leannet.train.train (two stages) or set method.teacher"

    @classmethod
    def prepare(cls, config: DictConfig, run_dir: Path) -> DictConfig:
        """Stage 1 when `method.teacher` is empty: train the recipe with `ce` into `run_dir/teacher`."""
        if config.method.get("teacher"):
            return super().prepare(config, run_dir)
        from leannet.train.run import train  # the trainer imports this module's registry

        stage = Path(run_dir) / "teacher"
        if not (stage / "results.json").is_file():
            first = to_dict(config)
            first.update(name=f"{config.name}_teacher", method={"name": "ce"})
            print(f"tfkd_self stage 1/2: training the teacher (same recipe, method ce) in {stage}", flush=True)
            train(merge_recipe(first, source="tfkd_self stage 1"), run_dir=stage,
                  resume=(stage / "checkpoints" / "last.ckpt").is_file())
            print(f"tfkd_self stage 2/2: distilling a fresh student from {stage}", flush=True)
        return merge_recipe(config, {"method": {"teacher": str(stage)}}, source="tfkd_self stage 2")


@register_method("tfkd_reg")
class TfKDReg(Method):
    """Tf-KD_reg: (1−α)·CE(z, y) + α·m·KL(softmax(p^d/T) ‖ softmax(z/τ_s)), no teacher (Tf-KD §5).

    p^d puts `correct_prob` a on the label and (1−a)/(K−1) elsewhere. Defaults: the paper's ResNet18
    setting on CIFAR-100 (α 0.1, T 20, a 0.99, m_official 100 → m 1.0), τ_s = 1 as in the official code.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        alpha: float = 0.1,
        temperature: float = 20.0,
        correct_prob: float = 0.99,
        multiplier: float = 1.0,
        official_multiplier: float | None = None,
        student_temperature: float = 1.0,
    ) -> None:
        super().__init__(model, num_classes)
        multiplier = batch_mean_multiplier(multiplier, official_multiplier, num_classes)
        _check_weights(alpha, multiplier)
        self.alpha, self.temperature, self.multiplier = alpha, temperature, multiplier
        self.correct_prob, self.student_temperature = correct_prob, student_temperature
        if not (temperature > 0 and student_temperature > 0):
            raise LeannetError(f"method.temperature and method.student_temperature must be > 0, got "
                               f"{temperature} and {student_temperature}")
        if not 0.0 < correct_prob <= 1.0:
            raise LeannetError(f"method.correct_prob must be in (0, 1], got {correct_prob}")

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        logits = self.model(x)
        ce = F.cross_entropy(logits.float(), y)
        reg = tfkd_reg_loss(logits, y, self.temperature, self.correct_prob, self.student_temperature)
        loss = (1.0 - self.alpha) * ce + self.alpha * self.multiplier * reg
        return {"loss": loss, "logits": logits, "ce": ce.detach(), "reg": reg.detach()}
