import json

import pytest

from leannet.errors import LeannetError
from leannet.report import aggregate, find_runs, markdown_table, mean_std


def fake_run(root, name, seed, acc, best):
    run_dir = root / name / f"seed{seed}"
    run_dir.mkdir(parents=True)
    results = {"name": name, "seed": seed, "test_acc": acc, "test_acc_at_best_val": best, "best_val_acc": best,
               "epochs": 3, "epoch_seconds": 2.0, "images_per_s": 1000.0, "params": 1234, "trainable_params": 1234}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def test_mean_std_golden():
    assert mean_std([0.9, 0.92]) == pytest.approx((0.91, 0.01414213562))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_aggregate_and_table(tmp_path):
    fake_run(tmp_path, "ce", 0, 0.90, 0.91)
    fake_run(tmp_path, "ce", 1, 0.92, 0.93)
    fake_run(tmp_path, "ls", 0, 0.95, 0.95)
    rows = aggregate(find_runs([tmp_path]))
    assert [r["name"] for r in rows] == ["ce", "ls"]
    assert rows[0]["seeds"] == 2 and rows[0]["test_acc"] == pytest.approx((0.91, 0.0141421356))
    table = markdown_table(rows)
    assert "| ce | 2 | 3 | 91.00 ± 1.41 | 92.00 ± 1.41 | 92.00 ± 1.41 | 2.0 | 1000 | 1,234 (1,234) |" in table
    assert "| ls | 1 | 3 | 95.00 ± 0.00 |" in table


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(LeannetError, match="no finished runs"):
        find_runs([tmp_path])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    with pytest.raises(LeannetError, match="cannot read .*results.json"):
        aggregate(find_runs([tmp_path]))


def test_named_outputs_table(tmp_path):
    from leannet.report.table import outputs_table

    for seed, (exit1, ens) in enumerate([(0.5, 0.8), (0.7, 0.9)]):
        run_dir = fake_run(tmp_path, "byot", seed, 0.85, 0.85)
        results = json.loads((run_dir / "results.json").read_text())
        results |= {"test_acc_exit1": exit1, "test_acc_ensemble": ens}
        (run_dir / "results.json").write_text(json.dumps(results))
    fake_run(tmp_path, "ce", 0, 0.90, 0.91)
    rows = aggregate(find_runs([tmp_path]))
    table = outputs_table(rows)
    assert "| byot | exit1 | 60.00 ± 14.14 |" in table and "| byot | ensemble | 85.00 ± 7.07 |" in table
    assert "| ce |" not in table and outputs_table([r for r in rows if r["name"] == "ce"]) == ""


def test_table_tolerates_older_result_files_without_counts_or_timing(tmp_path):
    old = fake_run(tmp_path, "ke", 0, 0.70, 0.70)
    results = json.loads((old / "results.json").read_text())
    for key in ("trainable_params", "epoch_seconds", "images_per_s"):
        results[key] = None
    (old / "results.json").write_text(json.dumps(results))
    fake_run(tmp_path, "ke", 1, 0.72, 0.72)
    assert "| ke | 2 | 3 | 71.00 ± 1.41 |" in markdown_table(aggregate(find_runs([tmp_path])))
    (tmp_path / "ke" / "seed1" / "results.json").write_text(json.dumps(results))
    assert "| 1,234 (–) |" in markdown_table(aggregate(find_runs([tmp_path])))
