"""A checksum of the tensors inside a checkpoint, so bit flips on disk are caught when it is loaded.

Stored inside the checkpoint (one file, replaced atomically: no sidecar that a crash or a copy could
separate from its file). It covers every tensor's bytes, dtype, shape and place in the nested dict;
other values (epoch counters, Lightning's loop state) are not covered.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

CHECKSUM_KEY = "leannet_checksum"


def tensor_digest(obj: Any) -> str:
    """sha256 over the tensors of a nested dict/list/tuple, in a fixed order (dict keys sorted as text)."""
    digest = hashlib.sha256()

    def walk(value: Any, key: str) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}\n".encode())
            if value.layout == torch.strided and not value.is_quantized:
                flat = value.detach().cpu().contiguous().reshape(-1)
                digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                if k != CHECKSUM_KEY:
                    walk(value[k], f"{key}/{k}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{key}/{i}")

    walk(obj, "")
    return digest.hexdigest()
