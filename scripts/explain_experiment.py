"""Dissect the last conv stage of a CNN trained on procedural scenes; explanations of length 1, 3, 5.

    leannet train recipes/explain/scenes_resnet8.yaml
    python scripts/explain_experiment.py runs/explain/scenes_resnet8 --layer layer3 --count 5000

Writes into ``--out`` (default results/explain): ``units_len{L}.csv/json`` per maximum length,
``summary.json`` (IoU distribution per length, fraction interpretable, operators used, search time,
and a paired leannet-vs-reference search timing on a few units of this layer), ``iou_by_length.png``,
and ``report/`` (HTML + PNG grids of the ``--report-units`` units with the highest length-3 IoU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np

from leannet.explain import Concept, dissect, scenes_probe
from leannet.explain.report import match_channels, write_report, write_table
from leannet.explain.search import pack_bits, search_unit, unpack_bits
from leannet.train.run import load_trained

REPO = Path(__file__).resolve().parents[1]


def reference_module():
    spec = importlib.util.spec_from_file_location("explain_search_bench", REPO / "benchmarks" / "explain_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "p10": float(np.quantile(v, 0.1)), "p90": float(np.quantile(v, 0.9)), "max": float(v.max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--layer", default="layer3")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--seed", type=int, default=12345, help="probe seed (training used other seeds)")
    p.add_argument("--lengths", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--quantile", type=float, default=0.005, help="top quantile a unit fires on (paper: 0.005)")
    p.add_argument("--report-units", type=int, default=12)
    p.add_argument("--timing-units", type=int, default=4, help="units timed against the reference search")
    p.add_argument("--out", default="results/explain")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    config, built = load_trained(args.run_dir)
    info = built.loaders.info
    probe = scenes_probe(args.count, args.seed, info.image_size[0])
    probe.images = match_channels(probe.images, info.in_channels)
    start = time.perf_counter()
    d = dissect(built.method.model, args.layer, probe, info.mean, info.std, quantile=args.quantile)
    prepare_s = time.perf_counter() - start

    summary: dict = {"run_dir": args.run_dir, "model": config.model.name, "layer": args.layer,
                     "probe": {"name": "scenes", "images": len(probe), "seed": args.seed,
                               "mask_size": list(probe.mask_size), "concepts": len(probe.concepts),
                               "categories": sorted(set(probe.categories))},
                     "quantile": args.quantile, "units": len(d.units), "map_size": list(d.acts.shape[2:]),
                     "prepare_s": prepare_s,
                     "by_length": {}}
    all_rows = {}
    for length in args.lengths:
        start = time.perf_counter()
        ex = d.explain(max_length=length, beam=args.beam)
        seconds = time.perf_counter() - start
        rows = d.rows(ex)
        all_rows[length] = (ex, rows)
        write_table(rows, out, f"units_len{length}")
        text = [r["formula"] for r in rows]
        summary["by_length"][length] = {
            "iou": describe([r["iou"] for r in rows]),
            "search_s_per_unit": seconds / len(rows),
            "mean_formula_length": float(np.mean([r["length"] for r in rows])),
            "units_using": {op: sum(f" {op} " in t for t in text) for op in ("OR", "AND")}
            | {"NOT": sum("NOT " in t for t in text)},
        }
        print(length, json.dumps(summary["by_length"][length]))
    rows1 = all_rows[min(args.lengths)][1]
    summary["interpretable_fraction"] = float(np.mean([r["interpretable"] for r in rows1]))
    summary["mean_unit_coverage"] = float(np.mean([r["unit_coverage"] for r in rows1]))
    summary["label_categories"] = {c: sum(r["label_category"] == c for r in rows1 if r["interpretable"])
                                   for c in sorted(set(probe.categories))}
    if len(args.lengths) > 1:
        lo, hi = min(args.lengths), max(args.lengths)
        gain = [b["iou"] - a["iou"] for a, b in zip(all_rows[lo][1], all_rows[hi][1], strict=True)]
        summary["iou_gain_longest_vs_shortest"] = describe(gain)
        summary["units_with_higher_iou_at_longest"] = int(sum(g > 0 for g in gain))

    # paired timing on this layer: leannet vs the reference (dense masks, one mask op per candidate)
    ref = reference_module()
    dense = unpack_bits(d.concepts.rows, d.concepts.num_positions)
    atoms = [Concept(n) for n in probe.concepts]
    order = sorted(range(len(d.units)), key=lambda k: -all_rows[max(args.lengths)][1][k]["iou"])
    timing = []
    for i, k in enumerate(order[: args.timing_units]):
        unit = unpack_bits(d.units[k], d.concepts.num_positions)
        t = {}
        for which in (["reference", "leannet"] if i % 2 == 0 else ["leannet", "reference"]):
            s = time.perf_counter()
            if which == "reference":
                f, v, _ = ref.reference_search(unit, dense, atoms, args.beam, 3)
            else:
                res = search_unit(pack_bits(unit), d.concepts, args.beam, 3)
            t[which] = time.perf_counter() - s
        timing.append({"unit": k, "identical": bool(str(f) == str(res.formula) and v == res.iou),
                       "reference_s": t["reference"], "leannet_s": t["leannet"],
                       "ratio": t["reference"] / t["leannet"]})
        print(json.dumps(timing[-1]))
    summary["timing_length3"] = {"rows": timing, "all_identical": all(r["identical"] for r in timing),
                                 "speedup_median": statistics.median(r["ratio"] for r in timing) if timing else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(all_rows, out / "iou_by_length.png", f"{config.model.name} {args.layer} on scenes ({len(probe)} images)")
    _, rows3 = all_rows[3 if 3 in all_rows else max(args.lengths)]
    if args.report_units > 0:
        write_report(d, rows3, out / "report", max_units=args.report_units,
                     title=f"{config.model.name} {args.layer}: compositional explanations (max length 3)")
    print(json.dumps({k: v for k, v in summary.items() if k != "by_length"}, indent=2))


def plot(all_rows: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(0, 1, 26)
    for length, (_, rows) in sorted(all_rows.items()):
        axes[0].hist([r["iou"] for r in rows], bins=bins, histtype="step", linewidth=1.8, label=f"max length {length}")
    axes[0].axvline(0.04, color="grey", linestyle=":", label="IoU 0.04")
    axes[0].set_xlabel("explanation IoU")
    axes[0].set_ylabel("units")
    axes[0].legend()
    lengths = sorted(all_rows)
    axes[1].boxplot([[r["iou"] for r in all_rows[n][1]] for n in lengths], tick_labels=[str(n) for n in lengths])
    axes[1].set_xlabel("maximum formula length")
    axes[1].set_ylabel("IoU per unit")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
