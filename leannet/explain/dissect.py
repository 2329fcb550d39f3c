"""Network Dissection (Bau et al. 2017) with compositional explanations (Mu & Andreas 2020).

1. Activations of one layer, reached by module path through a forward hook, streamed over the probe
   images in batches (into a ``.npy`` memory map on disk when ``cache_dir`` is given, so maps that do not
   fit in memory never have to).
2. Per-unit threshold T_k: the (1 − q) quantile (q = 0.005) of the unit's activations over every
   spatial position of every probe image, on the un-upsampled maps. Exact (numpy's linear
   interpolation quantile), computed a group of units at a time.
3. Unit mask: the map upsampled bilinearly to the concept-mask resolution, then > T_k.
4. IoU(k, F) = Σ_images |M_k ∧ F| / Σ_images |M_k ∨ F| (counts summed over the whole probe set).
   Image-level concepts cover every pixel of their images (the probe's masks already do).
5. Label: the best single concept; interpretable when its IoU ≥ 0.04. Explanation: the beam search
   of :mod:`leannet.explain.search` over formulas up to ``max_length``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leannet.errors import LeannetError
from leannet.explain.probes import Probe
from leannet.explain.search import ConceptBits, Explanation, search_unit

INTERPRETABLE_IOU = 0.04


def find_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (e.g. ``layer3.2.conv2``); unknown paths list the valid ones."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        shown = ", ".join(names[:40]) + (" …" if len(names) > 40 else "")
        raise LeannetError(f"model has no layer '{path}'; layers: {shown}") from None


def check_images(images: np.ndarray) -> None:
    """Probe images must be uint8 N×C×H×W in 0..255, as the trainer's data: floats in [0, 1] would be
    divided by 255 once more and reach the model as near-black images."""
    dtype = getattr(images, "dtype", None)
    if dtype != np.uint8 or images.ndim != 4:
        shown = f"{dtype} {tuple(getattr(images, 'shape', ()))}"
        if dtype is not None and np.issubdtype(dtype, np.floating) and images.size:
            shown += f" in [{float(np.min(images)):g}, {float(np.max(images)):g}]"
        raise LeannetError(f"probe images must be uint8 0..255 N×C×H×W, got {shown}; pass "
                           "(images * 255).round().astype(np.uint8) for floats in [0, 1]")


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 N×C×H×W (0..255) → float (x/255 − mean)/std, the trainer's input normalisation."""
    check_images(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


@torch.no_grad()
def collect_activations(model: nn.Module, layer: str, images: np.ndarray, mean: tuple[float, ...],
                        std: tuple[float, ...], batch_size: int = 100,
                        cache: str | Path | None = None) -> np.ndarray:
    """The activations of ``layer`` for every probe image: float32 N×K×h×w (N×K×1×1 for vector outputs).

    ``images``: uint8 N×C×H×W in 0..255 (floats are refused, :func:`check_images`). Streamed batch by batch
    into an in-memory array, or into the ``.npy`` memory map ``cache``. The model runs where its parameters
    are (e.g. CUDA): each batch goes there, its activations come back to the host.
    """
    check_images(images)
    module = find_module(model, layer)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    grabbed: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: grabbed.append(out[0] if isinstance(out, tuple)
                                                                             else out))
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        for start in range(0, len(images), batch_size):
            grabbed.clear()
            model(normalize(images[start : start + batch_size], mean, std).to(device, non_blocking=True))
            act = grabbed[0].detach().float().cpu()
            if act.dim() == 2:
                act = act[:, :, None, None]
            if act.dim() != 4:
                raise LeannetError(f"layer '{layer}' outputs shape {tuple(act.shape)}; dissection needs N×K×h×w "
                                   "maps (or N×K vectors)")
            if out is None:
                shape = (len(images), *act.shape[1:])
                out = (np.lib.format.open_memmap(str(cache), mode="w+", dtype=np.float32, shape=shape)
                       if cache else np.empty(shape, np.float32))
            out[start : start + len(act)] = act.contiguous().numpy()
    finally:
        handle.remove()
        model.train(was_training)
    assert out is not None
    return out


def unit_thresholds(acts: np.ndarray, quantile: float = 0.005, group: int = 16) -> np.ndarray:
    """T_k with P(a_k > T_k) = ``quantile`` over all positions of all images (exact, un-upsampled maps).

    ``acts``: N×K×h×w. T_k is numpy's (linear-interpolation) (1 − quantile) quantile of unit k's values.
    """
    if not 0 < quantile < 1:
        raise LeannetError(f"quantile must be in (0, 1), got {quantile}; the paper uses 0.005")
    k = acts.shape[1]
    out = np.empty(k, np.float64)
    for s in range(0, k, group):
        block = np.asarray(acts[:, s : s + group], dtype=np.float32)
        flat = block.transpose(1, 0, 2, 3).reshape(block.shape[1], -1)
        out[s : s + group] = np.quantile(flat, 1 - quantile, axis=1)
    return out


def upsampled_masks(acts: np.ndarray, thresholds: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Unit masks of a chunk of images: bilinear upsampling of N×K×h×w maps to ``size``, then > T_k → bool."""
    t = torch.from_numpy(np.ascontiguousarray(acts, dtype=np.float32))
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return (t > torch.from_numpy(thresholds).float().view(1, -1, 1, 1)).numpy()


def pack_stream(chunks: Iterator[np.ndarray], rows: int, positions: int) -> np.ndarray:
    """Pack a stream of boolean chunks (rows × m, each m a multiple of 8 but the last) into uint64 words."""
    out = np.zeros((rows, ((positions + 63) // 64) * 8), np.uint8)
    at = 0
    for chunk in chunks:
        if at % 8:
            raise ValueError("only the last chunk may hold a number of positions that is not a multiple of 8")
        packed = np.packbits(chunk, axis=1, bitorder="little")
        out[:, at // 8 : at // 8 + packed.shape[1]] = packed
        at += chunk.shape[1]
    if at != positions:
        raise ValueError(f"packed {at} positions, expected {positions}")
    return out.view(np.uint64)


def _image_chunks(n: int, chunk: int = 64) -> Iterator[tuple[int, int]]:
    for s in range(0, n, chunk):  # 64 images: a whole number of bytes for any mask size
        yield s, min(n, s + chunk)


def concept_bits(probe: Probe) -> ConceptBits:
    """The probe's concept masks, bit-packed (positions = image × mask row × mask column)."""
    h, w = probe.mask_size
    n, c = len(probe), len(probe.concepts)

    def chunks() -> Iterator[np.ndarray]:
        for s, e in _image_chunks(n):
            yield probe.masks(np.arange(s, e)).reshape(c, -1)

    return ConceptBits(pack_stream(chunks(), c, n * h * w), n * h * w, list(probe.concepts))


def unit_bits(acts: np.ndarray, thresholds: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bit-packed unit masks K×W (same positions as :func:`concept_bits`)."""
    n, k = acts.shape[:2]

    def chunks() -> Iterator[np.ndarray]:
        for s, e in _image_chunks(n):
            yield upsampled_masks(acts[s:e], thresholds, size).transpose(1, 0, 2, 3).reshape(k, -1)

    return pack_stream(chunks(), k, n * size[0] * size[1])


@dataclass
class Dissection:
    """One layer dissected on one probe: activations, thresholds, packed unit and concept masks."""

    layer: str
    probe: Probe
    acts: np.ndarray
    thresholds: np.ndarray
    units: np.ndarray          # K×W packed unit masks
    concepts: ConceptBits
    quantile: float = 0.005

    def explain(self, max_length: int = 3, beam: int = 5, length_penalty: float = 0.0,
                candidate_limit: int | None = None, units: list[int] | None = None) -> list[Explanation]:
        """The beam-search explanation of every unit (or of ``units``)."""
        ids = range(len(self.units)) if units is None else units
        return [search_unit(self.units[k], self.concepts, beam, max_length, length_penalty, candidate_limit)
                for k in ids]

    def rows(self, explanations: list[Explanation], units: list[int] | None = None) -> list[dict]:
        """One table row per unit: formula, IoU, NetDissect label, its IoU and category, interpretable."""
        ids = list(range(len(self.units))) if units is None else units
        category = dict(zip(self.probe.concepts, self.probe.categories, strict=True))
        positions = self.concepts.num_positions
        return [{
            "unit": k, "formula": str(e.formula), "iou": e.iou, "length": len(e.formula),
            "label": str(e.label), "label_iou": e.label_iou, "label_category": category.get(str(e.label), ""),
            "interpretable": e.label_iou >= INTERPRETABLE_IOU, "threshold": float(self.thresholds[k]),
            "unit_coverage": e.unit_size / positions,
        } for k, e in zip(ids, explanations, strict=True)]


def dissect(model: nn.Module, layer: str, probe: Probe, mean: tuple[float, ...], std: tuple[float, ...],
            quantile: float = 0.005, batch_size: int = 100, cache_dir: str | Path | None = None) -> Dissection:
    """Hook ``layer``, run the probe, threshold and upsample every unit, pack the masks (steps 1–3).

    ``probe.images`` must be uint8 N×C×H×W in 0..255 (normalised here with ``mean``/``std`` as the trainer
    does); float images are refused with what to pass."""
    cache = Path(cache_dir) / f"acts_{layer.replace('.', '_')}.npy" if cache_dir else None
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
    acts = collect_activations(model, layer, probe.images, mean, std, batch_size, cache)
    thresholds = unit_thresholds(acts, quantile)
    return Dissection(layer, probe, acts, thresholds, unit_bits(acts, thresholds, probe.mask_size),
                      concept_bits(probe), quantile)
