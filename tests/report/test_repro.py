import json
from pathlib import Path

import pytest

from leannet.cli import main
from leannet.errors import LeannetError
from leannet.report.repro import collect, generate, lookup, verdict

REPO = Path(__file__).resolve().parents[2]


def test_committed_reports_match_committed_results():
    stale = generate(REPO / "recipes" / "reproduction.yaml", root=REPO, check=True)
    assert stale == [], f"run `leannet repro` and commit: {[p.name for p in stale]} differ"


def test_verdict_rules():
    assert verdict([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], ">") == "reproduced"
    assert verdict([0.80, 0.81, 0.82], [0.90, 0.91, 0.92], ">") == "not reproduced"
    assert verdict([0.80, 0.81, 0.82], [0.90, 0.91, 0.92], "<") == "reproduced"
    assert verdict([0.80, 0.90, 0.85], [0.84, 0.86, 0.85], ">") == "inconclusive"
    assert verdict([0.9], [0.8], ">") == "inconclusive (one seed)"
    assert verdict([], [0.8], ">") == "not run"
    with pytest.raises(LeannetError, match="'>' or '<'"):
        verdict([1.0], [1.0], ">=")
    # each pair moves by +0.01 while the seeds spread widely: unpaired cannot tell, paired can
    a, b = [0.61, 0.71, 0.81], [0.60, 0.70, 0.80]
    assert verdict(a, b, ">") == "inconclusive" and verdict(a, b, ">", paired=True) == "reproduced"
    assert verdict([0.60, 0.71, 0.79], b, ">", paired=True) == "inconclusive"  # differences 0, +0.01, −0.01
    with pytest.raises(LeannetError, match="equal length"):
        verdict([0.1, 0.2], [0.1, 0.2, 0.3], ">", paired=True)


def test_lookup_and_collect(tmp_path):
    assert lookup({"a": {"b": [1, 2]}}, "a.b.1") == 2 and lookup({"a": 1}, "a.c") is None
    assert lookup([{"iou": 0.1}, {"x": 1}, {"iou": 0.3}], "*.iou") == [0.1, 0.3]
    assert lookup([{"runs": [{"below_0.01": 0.2}, {"below_0.01": 0.4}]}], "0.runs.*.below_0.01") == [0.2, 0.4]
    assert lookup({"a": {"0": {"b": 1}}}, "a.0.b") == 1 and lookup({"a": [5]}, "a.0") == 5
    for seed, acc in enumerate([0.5, 0.7]):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps({"exits": {"1": acc}}))
    (tmp_path / "summary.json").write_text(json.dumps({"iou": [0.1, 0.2, 0.3]}))
    assert collect("seed*/results.json", "exits.1", tmp_path) == [0.5, 0.7]
    assert collect("summary.json", "iou", tmp_path) == [0.1, 0.2, 0.3]
    assert collect("nothing*/x.json", "iou", tmp_path) == []
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LeannetError, match="cannot read result file .*bad.json"):
        collect("bad.json", "x", tmp_path)


def test_generate_writes_tables_verdicts_and_missing_rows(tmp_path, capsys):
    for name, accs in (("a", [0.9, 0.92, 0.91]), ("b", [0.8, 0.82, 0.81])):
        for seed, acc in enumerate(accs):
            run = tmp_path / "results" / name / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps({"test_acc": acc, "test_acc_at_best_val": acc + 0.01}))
    (tmp_path / "bench.json").write_text(json.dumps({"ratio": 1.234, "device": "cpu", "n": {"a": 1, "b": 4},
                                                     "rs": [1.3, 1.1, 1.2], "load": [0.5, 2.25]}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "machine: test box\nsections:\n  - title: S\n    command: make it\n    rows:\n"
        "      - {name: a, files: 'results/a/seed*/results.json', best_key: test_acc_at_best_val}\n"
        "      - {name: b, files: 'results/b/seed*/results.json'}\n"
        "      - {name: c, files: 'results/c/seed*/results.json'}\n"
        "    claims: [{a: a, op: '>', b: b}, {a: c, op: '>', b: b}]\n"
        "benchmarks:\n  - {title: B, command: run b, file: bench.json, ratio: ratio, spread: [rs], load: load}\n"
        "  - {title: Missing, command: run m, file: none.json, ratio: ratio}\n"
        "  - {title: Quotient, command: run q, file: bench.json, ratio: 'n.a / n.b'}\n"
    )
    assert main(["repro", "--spec", str(spec), "--root", str(tmp_path)]) == 0
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert "| a | 3 seeds | 91.00 ± 1.00 % | 92.00 ± 1.00 % |" in text
    assert "| c | – | not run yet: `make it` | – |" in text
    assert "| a > b | +10.00 % (SE 0.82) | reproduced |" in text and "| c > b | – | not run |" in text
    bench = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| B | 1.23× | 1.10–1.30 |" in bench and "| cpu, load avg 2.2 |" in bench
    assert "| Missing | not run yet |" in bench and "| Quotient | 0.25× |" in bench
    assert main(["repro", "--spec", str(spec), "--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "results" / "b" / "seed0" / "results.json").write_text(json.dumps({"test_acc": 0.95}))
    assert main(["repro", "--spec", str(spec), "--root", str(tmp_path), "--check"]) == 2
    assert "REPRODUCTION.md out of date" in capsys.readouterr().err


def test_claim_with_unknown_row_is_an_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("sections:\n  - title: S\n    rows: [{name: a}]\n    claims: [{a: a, op: '>', b: zz}]\n")
    with pytest.raises(LeannetError, match="unknown row 'zz'; rows: a"):
        generate(spec, root=tmp_path)


def test_training_time_table_sums_costs_and_keeps_out_of_budget_sections_out(tmp_path):
    for seed, seconds in enumerate([100.0, 260.0]):
        run = tmp_path / "results" / "a" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"test_acc": 0.9, "train_seconds": seconds}))
    (tmp_path / "paper.json").write_text(json.dumps(
        {"runs": [{"epoch_seconds_mean": 30.0, "epochs_completed": 100}, {"epoch_seconds_mean": 20.0,
                                                                         "epochs_completed": 90}]}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "sections:\n"
        "  - title: Small\n    cost: [{files: 'results/*/seed*/results.json'}]\n"
        "    rows: [{name: a, files: 'results/a/seed*/results.json'}]\n"
        "  - title: Paper\n    in_total: false\n"
        "    cost: [{files: paper.json, key: 'runs.*.epoch_seconds_mean * runs.*.epochs_completed'}]\n"
        "    rows: [{name: p, files: paper.json, key: runs.0.epoch_seconds_mean}]\n"
    )
    generate(spec, root=tmp_path)
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert "| Small | 2 | 0.10 h | yes |" in text  # 360 s
    assert "| Paper | 2 | 1.33 h | no |" in text  # 3000 s + 1800 s
    assert "| **total** (one run at a time) | | **0.10 h** | |" in text
    assert "| two runs side by side on the 2 cores | | ≈ 0.05 h | |" in text
    assert "**Training time:** 1.33 h over 2 runs" in text and "not in the total" in text


def test_readme_blocks_are_filled_between_their_markers_and_checked(tmp_path):
    for seed, (a, b) in enumerate([(0.9, 0.8), (0.92, 0.81), (0.91, 0.82)]):
        for name, acc in (("a", a), ("b", b)):
            run = tmp_path / "results" / name / f"seed{seed}"
            run.mkdir(parents=True, exist_ok=True)
            (run / "results.json").write_text(json.dumps({"test_acc": acc}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "sections:\n  - title: S\n    paper: 'Someone et al., 2020 (papers/x.md)'\n    command: make it\n"
        "    rows: [{name: a, files: 'results/a/seed*/results.json'},\n"
        "           {name: b, files: 'results/b/seed*/results.json'}]\n"
        "    claims: [{a: a, op: '>', b: b, text: 'A beats B'}]\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- repro:headline (generated) -->\nold\n<!-- /repro:headline -->\nmiddle\n"
                      "<!-- repro:main (generated) -->\n<!-- /repro:main -->\nend\n")
    generate(spec, root=tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n<!-- repro:headline (generated) -->\n| paper | claim |") and "old" not in text
    assert ("| Someone et al., 2020 | A beats B | 91.00 ± 1.00 % (n 3) vs 81.00 ± 1.00 % (n 3) "
            "| +10.00 % (SE 0.82) | reproduced |") in text
    assert "middle\n<!-- repro:main (generated) -->\n| row | n | final |" in text and text.endswith("end\n")
    assert "| a | 3 seeds | 91.00 ± 1.00 % | – |\n| b | 3 seeds | 81.00 ± 1.00 % | – |\n<!-- /repro:main -->" in text
    assert generate(spec, root=tmp_path, check=True) == []
    readme.write_text(text.replace("reproduced", "edited by hand"))
    assert generate(spec, root=tmp_path, check=True) == [readme]


def test_sign_test_golden_values():
    from leannet.report.repro import sign_test

    assert sign_test(5, 5) == pytest.approx(2 / 32)  # all five seeds favour: p = 2 · 0.5^5
    assert sign_test(0, 5) == pytest.approx(2 / 32)
    assert sign_test(4, 5) == pytest.approx(2 * 6 / 32)
    assert sign_test(5, 10) == 1.0 and sign_test(0, 0) == 1.0


def test_paired_rows_pair_by_seed_folder_not_by_position(tmp_path):
    from leannet.report.repro import collect_labelled, effect, pair_up

    for variant, accs in (("a", {0: 0.80, 2: 0.82, 10: 0.90}), ("b", {2: 0.81, 10: 0.85, 3: 0.5})):
        for seed, acc in accs.items():
            (tmp_path / variant / f"seed{seed}").mkdir(parents=True)
            (tmp_path / variant / f"seed{seed}" / "results.json").write_text(json.dumps({"test_acc": acc}))
    a = collect_labelled("a/seed*/results.json", "test_acc", tmp_path)
    assert [label for label, _ in a] == ["seed0#0", "seed2#0", "seed10#0"]  # natural order
    xs, ys = pair_up(a, collect_labelled("b/seed*/results.json", "test_acc", tmp_path))
    assert xs == [0.82, 0.90] and ys == [0.81, 0.85]  # only seeds 2 and 10 are in both rows
    assert effect(xs, ys, ">", paired=True, scale=100) == "+3.00 ± 2.83 (paired; 2/2 favour; sign p 0.5)"
    assert effect([0.9, 0.8], [0.7, 0.6], ">", paired=False, scale=100).startswith("+20.00 (SE ")
    assert effect([0.9], [0.7, 0.6], ">", paired=False, scale=100) == "+25.00 (one value on a side: no SE)"
    assert "1/3 favour, 2 tied; sign p 1)" in effect([0.5, 0.5, 0.6], [0.5, 0.5, 0.5], ">", paired=True)
    assert effect([0.9], [0.7], ">", paired=True, scale=100) == "+20.00 (paired; 1/1 favour; sign p 1)"  # no ± 0.00


def test_a_dict_by_seed_pairs_by_its_seeds(tmp_path):
    from leannet.report.repro import collect_labelled, pair_up

    (tmp_path / "summary.json").write_text(json.dumps({"full": {"d": {"seed0": 1.0, "seed1": 2.0, "seed4": 5.0}},
                                                       "part": {"d": {"seed4": 4.0, "seed1": 1.5}}}))
    full = collect_labelled("summary.json", "full.d", tmp_path)
    assert full == [("seed0#0", 1.0), ("seed1#0", 2.0), ("seed4#0", 5.0)]
    assert pair_up(full, collect_labelled("summary.json", "part.d", tmp_path)) == ([2.0, 5.0], [1.5, 4.0])


def test_gpu_section_says_not_measured_until_a_gpu_run_writes_its_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("gpu_command: bash gpu.sh run\ngpu_benchmarks:\n"
                    "  - {title: G, command: python gpu.py, file: gpu.json, ratio: rbn.ratio_median,\n"
                    "     spread: [rbn.ratios]}\n"
                    "  - {title: H, command: python gpu.py, file: gpu.json, ratio: byot.ratio_median}\n")
    generate(spec, root=tmp_path)
    bench = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## GPU\n\nNot measured (no GPU run yet): `bash gpu.sh run` on a CUDA machine writes gpu.json." in bench
    (tmp_path / "gpu.json").write_text(json.dumps({"device": "NVIDIA H200", "rbn": {"ratio_median": 1.02,
                                                                                   "ratios": [1.0, 1.05]}}))
    generate(spec, root=tmp_path)  # the run was cut off before H
    assert "| H | not measured (the GPU run stopped before it) | – |" in (tmp_path / "BENCHMARKS.md").read_text()
    data = json.loads((tmp_path / "gpu.json").read_text()) | {"byot": {"ratio_median": 1.2}}
    (tmp_path / "gpu.json").write_text(json.dumps(data))
    generate(spec, root=tmp_path)
    bench = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| G | 1.02× | 1.00–1.05 |" in bench and "| NVIDIA H200 | `python gpu.py` |" in bench
    assert "| H | 1.20× |" in bench and "Conditions" not in bench
    (tmp_path / "gpu.json").write_text(json.dumps(data | {"note": "measured beside other jobs"}))
    generate(spec, root=tmp_path)
    bench = (tmp_path / "BENCHMARKS.md").read_text()
    assert "column. Conditions, as the run recorded them: measured beside other jobs.\n" in bench


def test_contention_benchmark_row_reads_its_json_and_tolerates_its_absence(tmp_path):
    from leannet.report.repro import Spec, load_spec, render_benchmarks

    shipped = load_spec(REPO / "recipes" / "reproduction.yaml")
    bench = next(b for b in shipped.benchmarks if b.file == "benchmarks/results/contention.json")
    spec = Spec(machine="test", benchmarks=[bench])
    assert f"| {bench.title} | not run yet |" in render_benchmarks(spec, tmp_path, "spec.yaml")
    result = tmp_path / bench.file
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"slowdown_default": 1.5, "slowdown_rounds": [1.4, 1.6], "load_average": [0.2, 1.1]}))
    assert f"| {bench.title} | 1.50× | 1.40–1.60 | ≤ 1.8" in render_benchmarks(spec, tmp_path, "spec.yaml")


def test_quoted_rows_included_tables_and_missing_plots(tmp_path):
    (tmp_path / "teachers.json").write_text(json.dumps({"points": {"t:epoch1": {"seeds": {"0": {"acc": 0.2},
                                                                                          "1": {"acc": 0.4}}},
                                                               "t:last": {"seeds": {"0": {"acc": 0.9}}}}}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "sections:\n  - title: S\n    command: make it\n"
        "    rows:\n      - {name: paper, quoted: '89.75 ± 0.03 %', quoted_best: '89.80 %'}\n"
        "      - {name: teacher, files: teachers.json, key: 'points.t:epoch1.seeds.*.acc'}\n"
        "      - {name: one, files: teachers.json, key: 'points.t:last.seeds.*.acc'}\n"
        "      - {name: later, files: 'none/seed*/results.json', missing: 'not run yet (above)'}\n"
        "    tables: [table.md, absent.md]\n    plots: [curve.png, absent.png]\n"
    )
    (tmp_path / "table.md").write_text("| x | y |\n|---|---|\n| 1 | 2 |\n")
    (tmp_path / "curve.png").write_bytes(b"png")
    generate(spec, root=tmp_path)
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert "| paper | paper | 89.75 ± 0.03 % | 89.80 % |" in text
    assert "| teacher | 2 seeds | 30.00 ± 14.14 % | – |" in text  # '*' over a dict's values
    assert "| one | 1 seed | 90.00 % | – |" in text  # one value: no spread to show
    assert "| later | – | not run yet (above) | – |" in text
    assert "| x | y |\n|---|---|\n| 1 | 2 |" in text and "*absent.md: not generated yet* (`make it`)" in text
    assert "![curve](curve.png)" in text and "*plot absent.png: not generated yet*" in text
