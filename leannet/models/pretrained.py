"""Pretrained weights for ``tv:`` and ``timm:`` models, read from local files only (never downloaded).

``model.args.weights`` (torchvision: ``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet18_Weights.IMAGENET1K_V1`` or a
file path) and ``model.args.pretrained`` (timm: ``true``, or a file path) are looked up in the torch hub
cache, ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), under the file name the
library itself would download (timm models hosted only on the Hugging Face hub: ``<model>.<tag>.safetensors``
or ``.pth`` there, or the Hugging Face cache). A missing file is a one-line error naming the expected path.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leannet.errors import LeannetError


def hub_checkpoints() -> Path:
    """The torch hub checkpoint folder (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _is_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pth", ".pt", ".bin", ".safetensors"))


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LeannetError(f"{what} not found: {path}; check the path")
    return path


def torchvision_weights_file(name: str, weights: Any) -> Path:
    """The local file of torchvision weights ``weights`` of model ``name`` (an error if it is absent)."""
    import torchvision

    value = str(weights)
    if _is_path(value):
        return _existing(Path(value).expanduser(), "model.args.weights file")
    enum = torchvision.models.get_model_weights(name)
    member = value.rsplit(".", 1)[-1]
    if member not in enum.__members__:
        valid = ", ".join(["DEFAULT", *enum.__members__])
        raise LeannetError(f"unknown model.args.weights '{value}' for tv:{name}; valid: {valid}, or a file path")
    url = enum[member].url
    path = hub_checkpoints() / Path(url).name
    if not path.is_file():
        raise LeannetError(f"pretrained weights for tv:{name} ({value}) not found: expected {path}; "
                           f"download {url} into that folder (leannet never downloads weights) or set "
                           "TORCH_HOME to where it lies")
    return path


def timm_weights_file(name: str, pretrained: Any) -> Path:
    """The local file of timm model ``name``'s default pretrained weights (or the path ``pretrained``)."""
    import timm

    if isinstance(pretrained, str) and _is_path(pretrained):
        return _existing(Path(pretrained).expanduser(), "model.args.pretrained file")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise LeannetError(f"timm:{name} has no pretrained weights; set model.args.pretrained=false")
    label = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    candidates = [hub_checkpoints() / Path(cfg.url).name] if cfg.url else []
    candidates += [hub_checkpoints() / f"{label}.safetensors", hub_checkpoints() / f"{label}.pth"]
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin"):
                cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(cached, str):
                    candidates.append(Path(cached))
        except ImportError:
            pass
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        source = cfg.url or f"https://huggingface.co/{cfg.hf_hub_id}"
        raise LeannetError(f"pretrained weights for timm:{name} not found: expected {candidates[0]}; download "
                           f"{source} there (leannet never downloads weights) or set TORCH_HOME to where it lies")
    return found


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file (``weights_only``), unwrapping ``state_dict``/``model``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise LeannetError(f"cannot read pretrained weights {path} ({reason}); delete it and download it again"
                           ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LeannetError(f"{path} holds no state dict of tensors; point model.args to a weights file")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], path: Path, label: str) -> list[str]:
    """Load ``state`` into ``model``, skipping tensors of another shape (the classifier for other classes).

    Returns the skipped keys; any key missing from the file, or a file key the model lacks, is an error.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise LeannetError(f"{path} does not hold {label}'s weights ({len(missing)} tensors missing, "
                           f"{len(unexpected)} unexpected, e.g. '{first}'); point model.args to that model's file")
    skipped = sorted(k for k in own if own[k].shape != state[k].shape)
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped
