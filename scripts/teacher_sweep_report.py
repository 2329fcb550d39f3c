"""Report a teacher sweep (De-KD / Re-KD as curves): teachers.json, summary.json, table.md, gain_vs_teacher.png.

    leannet suite recipes/distill/suite_teacher_sweep.yaml trainer.threads=1 --seeds 0 2 4 --publish   # beside:
    leannet suite recipes/distill/suite_teacher_sweep.yaml trainer.threads=1 --seeds 1 3 --publish
    python scripts/teacher_sweep_report.py recipes/distill/suite_teacher_sweep.yaml

Step 1 (needs the teachers' checkpoints under the suite's out_dir, runs/): each teacher point and seed is loaded
as its students load it (same checkpoint, BatchNorm re-estimated on the same training batches) and tested; its
accuracy and soft-target entropy go to RESULTS_DIR/teachers.json (committed; points already there are kept,
--recompute redoes them). Step 2 (committed files only): paired gains of the published students over the
published baseline, the table and the plot. With --no-teachers only step 2 runs (e.g. in a fresh clone).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from leannet.distill.sweep import evaluate_teachers, markdown_table, plot_sweep, sweep_summary
from leannet.train.run import quiet_lightning
from leannet.train.suite import load_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="the sweep suite, e.g. recipes/distill/suite_teacher_sweep.yaml")
    parser.add_argument("overrides", nargs="*", help="the key=value overrides the suite was run with")
    parser.add_argument("--baseline", default="baseline", help="the variant every student is paired with")
    parser.add_argument("--out", type=Path, help="where to write (default: the suite's results_dir)")
    parser.add_argument("--no-teachers", action="store_true", help="skip step 1 (keep teachers.json as it is)")
    parser.add_argument("--recompute", action="store_true", help="re-evaluate teachers already in teachers.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(args.threads)
    suite, _ = load_suite(args.suite, args.overrides)
    out = args.out or Path(suite.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    teachers_file = out / "teachers.json"
    teachers = json.loads(teachers_file.read_text()) if teachers_file.is_file() else {}
    if not args.no_teachers:
        teachers = evaluate_teachers(args.suite, teachers, args.overrides, recompute=args.recompute)
        teachers_file.write_text(json.dumps(teachers, indent=2) + "\n")
    summary = sweep_summary(args.suite, teachers, args.baseline, args.overrides)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary)
    (out / "table.md").write_text(table)
    plotted = plot_sweep(summary, out / "gain_vs_teacher.png")
    print(table)
    print(f"wrote {teachers_file}, {out / 'summary.json'}, {out / 'table.md'}"
          + (f", {plotted}" if plotted else " (no plot: no student has both a gain and a teacher yet)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
