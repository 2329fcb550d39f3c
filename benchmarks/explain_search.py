"""Compositional-explanation search speed: leannet's counting search vs a direct implementation.

``reference_search`` below is the REFERENCE: the official algorithm as published (Mu & Andreas 2020,
jayelm/compexp), written directly: dense boolean masks, and every candidate formula (F OR c,
F AND c, F AND NOT c for every beam formula F and concept c) evaluated as one full mask operation
followed by counting the intersection and union with the unit's mask. It uses the same tie-breaking
as leannet (generation order) so both must return identical formulas and IoUs; the benchmark checks it.

The probe is synthetic (rectangles of random size present in a random subset of the images, plus
image-level concepts covering whole images) and the units are noisy formulas of 1–3 concepts:

    python benchmarks/explain_search.py                                  # 5,000 images 32×32, 120 concepts
    python benchmarks/explain_search.py --images 200 --concepts 20 --units 2   # a quick check

Rounds alternate reference and leannet per unit (paired), and the median ratio is reported.
leannet's time per unit includes its share of the concept co-occurrence rows it computed (they are
shared by all the units of a layer), and the one-off packing of the concept masks is reported apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from leannet.explain.formulas import And, Concept, Formula, Not, Or
from leannet.explain.search import ConceptBits, pack_bits, search_unit


def reference_search(unit: np.ndarray, masks: np.ndarray, atoms: list[Formula], beam: int = 5,
                     max_length: int = 3, length_penalty: float = 0.0,
                     candidate_limit: int | None = None) -> tuple[Formula, float, list[tuple[Formula, float]]]:
    """The paper's beam search, directly: one full dense mask operation per candidate.

    ``unit``: bool P; ``masks``: bool C×P. Returns (best formula, its IoU, final beam as (formula, IoU)).
    """
    def iou(m: np.ndarray) -> float:
        union = np.count_nonzero(unit | m)
        return np.count_nonzero(unit & m) / union if union else 0.0

    n = len(masks)
    single = [iou(masks[c]) for c in range(n)]
    ranked = sorted(range(n), key=lambda c: -single[c])
    allowed = set(ranked if candidate_limit is None else ranked[:candidate_limit])
    # entries: (formula, atom ids, mask, iou, score)
    current = [(atoms[c], {c}, masks[c], single[c], single[c]) for c in ranked[:beam]]
    for _ in range(max_length - 1):
        pool = [(f, ids, None, v, s, None) for f, ids, _, v, s in current]
        for k, (_f, ids, m, _, _) in enumerate(current):
            for op in range(3):
                for c in range(n):
                    if c in ids or c not in allowed:
                        continue
                    new = (m | masks[c]) if op == 0 else (m & masks[c]) if op == 1 else (m & ~masks[c])
                    v = iou(new)
                    pool.append((None, ids, None, v, v - length_penalty * len(ids), (k, op, c)))
        order = sorted(range(len(pool)), key=lambda j: -pool[j][4])
        kept, seen = [], set()
        for j in order:
            if len(kept) == beam:
                break
            f, ids, _, v, s, how = pool[j]
            if how is None:
                entry = current[j]
            else:
                k, op, c = how
                pf, pids, pm, _, _ = current[k]
                f = Or(pf, atoms[c]) if op == 0 else And(pf, atoms[c]) if op == 1 else And(pf, Not(atoms[c]))
                m = (pm | masks[c]) if op == 0 else (pm & masks[c]) if op == 1 else (pm & ~masks[c])
                entry = (f, pids | {c}, m, v, s)
            if entry[0].key() in seen:
                continue
            seen.add(entry[0].key())
            kept.append(entry)
        current = kept
    return current[0][0], current[0][3], [(e[0], e[3]) for e in current]


def synthetic_probe(images: int, concepts: int, size: int, seed: int = 0,
                    image_level: float = 0.2) -> np.ndarray:
    """Dense concept masks C×N×S×S: each pixel concept is a random rectangle in a random subset of the
    images (frequency 2–30 %), a fraction ``image_level`` of the concepts cover whole images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((concepts, images, size, size), bool)
    for c in range(concepts):
        present = rng.random(images) < rng.uniform(0.02, 0.3)
        if c < int(concepts * image_level):
            out[c, present] = True
            continue
        h, w = rng.integers(2, size // 2 + 1, (2, images))
        y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        inside = ((yy >= y0[:, None, None]) & (yy < (y0 + h)[:, None, None])
                  & (xx >= x0[:, None, None]) & (xx < (x0 + w)[:, None, None]))
        out[c] = inside & present[:, None, None]
    return out


def planted_units(masks: np.ndarray, units: int, seed: int = 0, noise: float = 0.002) -> list[np.ndarray]:
    """Unit masks: a random formula of 1–3 concepts (OR / AND / AND NOT), with a fraction ``noise`` of
    the positions flipped."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(units):
        cs = rng.choice(len(masks), 3, replace=False)
        m = masks[cs[0]].copy()
        for c in cs[1 : rng.integers(1, 4)]:
            op = rng.integers(3)
            m = (m | masks[c]) if op == 0 else (m & masks[c]) if op == 1 else (m & ~masks[c])
        m ^= rng.random(m.shape) < noise
        out.append(m.reshape(-1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--concepts", type=int, default=120)
    p.add_argument("--size", type=int, default=32, help="mask side (positions per image = size²)")
    p.add_argument("--units", type=int, default=4)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--max-length", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/explain/search_benchmark.json")
    args = p.parse_args()

    dense = synthetic_probe(args.images, args.concepts, args.size, args.seed)
    names = [f"c{i}" for i in range(args.concepts)]
    atoms: list[Formula] = [Concept(n) for n in names]
    flat = dense.reshape(args.concepts, -1)
    start = time.perf_counter()
    concepts = ConceptBits.from_masks(flat, names)
    pack_seconds = time.perf_counter() - start
    rows = []
    for k, unit in enumerate(planted_units(dense, args.units, args.seed)):
        times = {}
        for which in (["reference", "leannet"] if k % 2 == 0 else ["leannet", "reference"]):
            start = time.perf_counter()
            if which == "reference":
                f_ref, iou_ref, beam_ref = reference_search(unit, flat, atoms, args.beam, args.max_length)
            else:
                cached = len(concepts._cooc)
                words = pack_bits(unit)
                res = search_unit(words, concepts, args.beam, args.max_length)
                new_rows = len(concepts._cooc) - cached
            times[which] = time.perf_counter() - start
        same = (str(res.formula) == str(f_ref) and res.iou == iou_ref
                and [(str(f), v) for f, v in res.beam] == [(str(f), v) for f, v in beam_ref])
        rows.append({"unit": k, "formula": str(res.formula), "iou": res.iou, "reference_formula": str(f_ref),
                     "reference_iou": iou_ref, "identical": same, "unit_positions": int(unit.sum()),
                     "reference_s": times["reference"], "leannet_s": times["leannet"],
                     "new_cooccurrence_rows": new_rows, "ratio": times["reference"] / times["leannet"]})
        print(json.dumps(rows[-1]))
    ratios = [r["ratio"] for r in rows]
    summary = {
        "images": args.images, "concepts": args.concepts, "mask_size": args.size,
        "positions": int(flat.shape[1]), "beam": args.beam, "max_length": args.max_length, "units": args.units,
        "all_identical": all(r["identical"] for r in rows),
        "reference_s_per_unit_median": statistics.median(r["reference_s"] for r in rows),
        "leannet_s_per_unit_median": statistics.median(r["leannet_s"] for r in rows),
        "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
        "leannet_pack_s_once": pack_seconds, "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
