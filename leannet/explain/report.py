"""Dissection outputs: a CSV and a JSON of per-unit explanations, PNG grids and one HTML page.

Per unit, the grid shows the probe images where the unit's maximum activation is highest: the top row
with the unit mask (red), the bottom row with the explanation's formula mask (blue), both overlaid on
the image upsampled to the mask resolution.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from leannet.errors import LeannetError
from leannet.explain.dissect import Dissection, upsampled_masks
from leannet.explain.formulas import evaluate, parse_formula

FLAG_EXAMPLES = {"--count": 2000, "--max-length": 3, "--beam": 5, "--top": 6}
FIELDS = ["unit", "formula", "iou", "length", "label", "label_iou", "label_category", "interpretable",
          "threshold", "unit_coverage"]


def write_table(rows: list[dict], out_dir: str | Path, stem: str = "units") -> tuple[Path, Path]:
    """Write ``rows`` as ``stem.csv`` and ``stem.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return out / f"{stem}.csv", out / f"{stem}.json"


def top_images(acts: np.ndarray, unit: int, k: int = 6) -> np.ndarray:
    """Indices of the ``k`` probe images with the largest maximum activation of ``unit``."""
    peak = np.asarray(acts[:, unit]).reshape(len(acts), -1).max(1)
    return np.argsort(-peak, kind="stable")[:k]


def _overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """HWC uint8 image (resized to the mask) with ``mask`` tinted in ``color`` and the rest dimmed."""
    h, w = mask.shape
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    tint = np.array(color, np.float32)
    out = np.where(mask[..., None], 0.45 * img + 0.55 * tint, 0.55 * img)
    return out.clip(0, 255).astype(np.uint8)


def unit_grid(d: Dissection, unit: int, formula: str, k: int = 6, scale: int = 2) -> Image.Image:
    """A 2×k grid: top activating images with the unit mask (top row) and the formula mask (bottom)."""
    idx = top_images(d.acts, unit, k)
    unit_masks = upsampled_masks(d.acts[idx][:, [unit]], d.thresholds[[unit]], d.probe.mask_size)[:, 0]
    concept = d.probe.masks(idx)
    fmask = evaluate(parse_formula(formula), concept, d.probe.concepts)
    pad = 2
    h, w = d.probe.mask_size
    grid = np.full((2 * (h + pad) + pad, len(idx) * (w + pad) + pad, 3), 255, np.uint8)
    for j in range(len(idx)):
        image = d.probe.images[idx[j]].transpose(1, 2, 0)
        for r, (m, color) in enumerate(((unit_masks[j], (255, 40, 40)), (fmask[j], (40, 90, 255)))):
            y, x = pad + r * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = _overlay(image, m, color)
    img = Image.fromarray(grid)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def write_report(d: Dissection, rows: list[dict], out_dir: str | Path,
                 top: int = 6, max_units: int | None = None, title: str = "Dissection") -> Path:
    """PNG grid per unit (``units/unit_K.png``) and ``report.html`` listing units by explanation IoU."""
    out = Path(out_dir)
    (out / "units").mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["iou"])[:max_units]
    interpretable = sum(r["interpretable"] for r in rows)
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>layer <code>{html.escape(d.layer)}</code>, {len(d.probe)} probe images, "
             f"{len(d.probe.concepts)} concepts; {interpretable}/{len(rows)} units interpretable "
             f"(label IoU ≥ 0.04). Red: unit mask (activation &gt; the unit's top-{100 * d.quantile:g}% "
             "threshold); blue: formula mask.</p>"]
    for i in order:
        r = rows[i]
        png = f"units/unit_{r['unit']}.png"
        unit_grid(d, r["unit"], r["formula"], top).save(out / png)
        parts.append(f"<h3>unit {r['unit']}: {html.escape(r['formula'])} (IoU {r['iou']:.3f})</h3>"
                     f"<p>NetDissect label {html.escape(r['label'])} ({r['label_category']}, IoU "
                     f"{r['label_iou']:.3f})</p><img src='{png}'>")
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts) + "\n")
    return out / "report.html"


def torch_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU) or a torch device name; a one-line error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LeannetError(f"unknown --device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LeannetError(f"--device {name}: no CUDA GPU is visible to PyTorch; use --device cpu")
    return device


def explain_run(run_dir: str | Path, layer: str, probe: str = "scenes", max_length: int = 3, beam: int = 5,
                count: int = 2000, quantile: float = 0.005, length_penalty: float = 0.0,
                candidate_limit: int | None = None, checkpoint: str = "last", out: str | Path | None = None,
                top: int = 6, seed: int = 12345, cache_dir: str | Path | None = None, device: str = "auto") -> dict:
    """``leannet explain``: dissect ``layer`` of a trained run on a probe and write table + report.

    ``cache_dir``: stream the activations into a ``.npy`` memory map there instead of memory. ``device``: where
    the model runs (``auto``: CUDA when there is a GPU, else the CPU; or ``cpu``, ``cuda``, ``cuda:1`` …).
    Returns a summary (paths, number of units, fraction interpretable, mean IoU).
    """
    for flag, value in (("--count", count), ("--max-length", max_length), ("--beam", beam), ("--top", top)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LeannetError(f"{flag} must be an integer >= 1, got {value}; e.g. {flag} {FLAG_EXAMPLES[flag]}")
    if candidate_limit is not None and candidate_limit < 1:
        raise LeannetError(f"--candidate-limit must be >= 1, got {candidate_limit}; or leave it out")
    if not 0 < quantile < 1:
        raise LeannetError(f"--quantile must be in (0, 1), got {quantile}; the paper uses 0.005")
    from leannet.explain.dissect import dissect, find_module
    from leannet.explain.probes import load_probe
    from leannet.train.run import load_trained

    _, built = load_trained(run_dir, checkpoint)
    info = built.loaders.info
    model = built.method.model.to(torch_device(device))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears and find_module(model, layer) is linears[-1] and linears[-1].out_features == info.num_classes:
        raise LeannetError(f"layer '{layer}' is the classifier: its {info.num_classes} units are the class logits, "
                           "not features to explain; pass --layer a convolutional layer (e.g. layer3)")
    p = load_probe(probe, count=count, size=info.image_size[0], seed=seed)
    p.images = match_channels(p.images, info.in_channels)
    out_dir = Path(out) if out else Path(run_dir) / "explain" / layer
    d = dissect(built.method.model, layer, p, info.mean, info.std, quantile, cache_dir=cache_dir)
    explanations = d.explain(max_length, beam, length_penalty, candidate_limit)
    rows = d.rows(explanations)
    csv_path, json_path = write_table(rows, out_dir)
    page = write_report(d, rows, out_dir, top, title=f"{Path(run_dir).name}: {layer}")
    return {"units": len(rows), "interpretable": sum(r["interpretable"] for r in rows) / len(rows),
            "mean_iou": float(np.mean([r["iou"] for r in rows])),
            "mean_label_iou": float(np.mean([r["label_iou"] for r in rows])),
            "csv": str(csv_path), "json": str(json_path), "report": str(page)}



def match_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Probe images (uint8 N×C×H×W) for a model taking ``channels``: RGB → grey (channel mean) for
    1-channel models, grey → RGB by repetition; other mismatches are an error."""
    have = images.shape[1]
    if have == channels:
        return images
    if channels == 1:
        return np.rint(images.mean(1, keepdims=True)).astype(np.uint8)
    if have == 1:
        return np.repeat(images, channels, axis=1)
    raise LeannetError(f"the probe images have {have} channels but the model takes {channels}; "
                       "use a probe of the model's kind of images")
