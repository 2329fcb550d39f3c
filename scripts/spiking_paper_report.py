"""TSSL-BP's Fashion-MNIST table like for like (issue 24): summary.json, summary.md and test_curves.png.

    leannet suite spiking/suite_paper_mlp --variants tssl trainer.threads=1 --publish            # beside:
    leannet suite spiking/suite_paper_mlp --variants surrogate_bptt trainer.threads=1 --publish
    timeout 4h leannet suite spiking/suite_paper_cnn trainer.threads=1          # partial; re-run to continue
    python scripts/spiking_paper_report.py
    python scripts/spiking_paper_report.py --compare results/gpu/h200_2026-12-04/cnn_tssl \
        results/spiking/paper_cnn/tssl/seed0                     # one seed on the GPU vs the CPU

Reads the suites' published runs (results_dir/<variant>/seed*/metrics.csv + results.json) and, for runs not
finished yet, their folders under runs/ (partial: labelled with their epoch count; their metrics.csv and
config.yaml are copied beside the published runs unless --no-publish-partial). Final-epoch and best-test-epoch
(the paper's protocol) accuracy, mean ± std over finished seeds, against the paper's numbers
(leannet.spiking.paper). Reads no checkpoint and trains nothing: seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leannet.spiking.paper import curve_gap, markdown, plot_curves, summarise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", default="recipes/spiking/suite_paper_mlp.yaml", help="the MLP suite")
    parser.add_argument("--cnn", default="recipes/spiking/suite_paper_cnn.yaml", help="the CNN suite ('' to skip)")
    parser.add_argument("--out", type=Path, default=Path("results/spiking/paper_mlp"))
    parser.add_argument("--no-publish-partial", action="store_true",
                        help="do not copy unfinished runs' metrics.csv / config.yaml to the results_dir")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                        help="only print how far two run folders' test curves are apart (e.g. one seed on two devices)")
    args = parser.parse_args(argv)
    if args.compare:
        gap = curve_gap(*args.compare)
        print(json.dumps(gap) if gap else f"no epoch shared by {args.compare[0]} and {args.compare[1]}")
        return 0 if gap else 1
    suites = {"mlp": args.mlp} | ({"cnn": args.cnn} if args.cnn else {})
    summary = summarise(suites, publish_partial=not args.no_publish_partial)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    (args.out / "summary.md").write_text(table)
    plotted = plot_curves(summary, args.out / "test_curves.png")
    print(table)
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'summary.md'}"
          + (f", {plotted}" if plotted else " (no curve: no run has a metrics.csv yet)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
