import json
from pathlib import Path

import pytest

from leannet.cli import main
from leannet.errors import LeannetError
from leannet.train.suite import load_suite, publish_suite, run_suite

REPO = Path(__file__).resolve().parents[2]


def write_suite(tmp_path, extra="", variants=None):
    variants = variants or "  ce: {method: {name: ce}}\n  ls: {method: {name: label_smoothing, smoothing: 0.2}}\n"
    path = tmp_path / "suite.yaml"
    path.write_text(
        f"base: {REPO / 'recipes/baseline/fashion_mnist.yaml'}\nout_dir: {tmp_path / 'out'}\nseeds: [0, 3]\n"
        "overrides: {model: {name: mlp}, trainer: {max_epochs: 1, progress: none}, "
        "data: {few_shot: 20, val_size: 100, batch_size: 50}}\n" + extra + "variants:\n" + variants
    )
    return path


def test_suite_expands_variants_and_seeds(tmp_path):
    suite, runs = load_suite(write_suite(tmp_path), ["optim.lr=0.01"])
    assert [(r.variant, r.seed) for r in runs] == [("ce", 0), ("ce", 3), ("ls", 0), ("ls", 3)]
    ls = runs[2].config
    assert ls.method.smoothing == 0.2 and ls.model.name == "mlp" and ls.optim.lr == 0.01 and ls.seed == 0
    assert ls.name == "ls" and runs[3].run_dir == tmp_path / "out" / "ls" / "seed3"
    assert runs[0].config.model.name == "mlp" and runs[0].config.trainer.max_epochs == 1


def test_suite_errors(tmp_path):
    with pytest.raises(LeannetError, match="bad suite file .*valid keys: base"):
        load_suite(write_suite(tmp_path, extra="seedz: [1]\n"))
    with pytest.raises(LeannetError, match=r"unknown config key 'optim.lrr' in .*\(variant bad\)"):
        load_suite(write_suite(tmp_path, variants="  bad: {optim: {lrr: 1}}\n"))


def test_finished_runs_are_skipped(tmp_path, capsys):
    path = write_suite(tmp_path)
    _, runs = load_suite(path)
    for run in runs:
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "results.json").write_text(json.dumps({"name": run.variant}))
    run_suite(path)  # would train (and fail without data) if it did not skip
    assert capsys.readouterr().out.count(": done (") == 4


@pytest.mark.fashion
def test_suite_end_to_end_with_report(tmp_path, capsys):
    path = write_suite(tmp_path)
    assert main(["suite", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| ce | 2 | 1 |" in out and "| ls | 2 | 1 |" in out
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "curves.png").is_file()
    assert main(["suite", str(path)]) == 0  # second time: everything is skipped
    assert capsys.readouterr().out.count(": done (") == 4


def test_finished_runs_are_published_without_checkpoints(tmp_path):
    results = tmp_path / "published"
    path = write_suite(tmp_path, extra=f"results_dir: {results}\n")
    _, runs = load_suite(path)
    for run in runs:
        (run.run_dir / "checkpoints").mkdir(parents=True)
        (run.run_dir / "checkpoints" / "last.ckpt").write_text("weights")
        (run.run_dir / "results.json").write_text(json.dumps({"name": run.variant, "seed": run.seed}))
        (run.run_dir / "metrics.csv").write_text("epoch\n1\n")
    run_suite(path)
    assert not results.exists()  # running a suite never writes the (committed) results_dir
    (tmp_path / "out" / "report.md").write_text("# report")
    assert main(["publish", str(path)]) == 0
    assert (results / "report.md").read_text() == "# report"
    assert main(["suite", str(path), "--publish"]) == 0  # the same in one command (the report is rewritten)
    assert (results / "report.md").read_text().startswith("# ") and (results / "curves.png").is_file()
    (results / "report.md").unlink()
    (results / "curves.png").unlink()
    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()) == [
        f"{v}/seed{s}/{f}" for v in ("ce", "ls") for s in (0, 3) for f in ("metrics.csv", "results.json")
    ]
    assert json.loads((results / "ls" / "seed3" / "results.json").read_text()) == {"name": "ls", "seed": 3}


def test_published_runs_count_as_done_in_a_fresh_checkout(tmp_path, capsys):
    results = tmp_path / "published"
    path = write_suite(tmp_path, extra=f"results_dir: {results}\n")
    assert all(r.published_dir is None for r in load_suite(path)[1])  # only when asked
    _, runs = load_suite(path, reuse_published=True)
    for run in runs:
        run.published_dir.mkdir(parents=True)
        (run.published_dir / "results.json").write_text(json.dumps({"name": run.variant}))
    assert all(r.done and r.result_dir == r.published_dir for r in runs)
    assert main(["suite", str(path), "--reuse-published"]) == 0  # would train (and fail without data) otherwise
    assert capsys.readouterr().out.count(": published (") == 4
    assert not list((tmp_path / "out").glob("*/seed*"))  # nothing trained; only the report was written
    (runs[0].published_dir / "results.json").unlink()
    assert not runs[0].done and runs[0].result_dir == runs[0].run_dir


def test_seeds_and_variants_select_runs_and_unknown_ones_are_named(tmp_path, capsys):
    path = write_suite(tmp_path)
    runs = run_suite(path, dry_run=True, seeds=[3], variants=["ls"])
    assert [(r.variant, r.seed) for r in runs] == [("ls", 3)]
    assert capsys.readouterr().out.count("\n") == 1
    with pytest.raises(LeannetError, match=r"--seeds \[1\] not in the suite; its seeds: 0, 3"):
        run_suite(path, dry_run=True, seeds=[1])
    with pytest.raises(LeannetError, match=r"--variants \['xx'\] not in the suite; its variants: ce, ls"):
        run_suite(path, dry_run=True, variants=["xx"])


def test_publish_needs_a_results_dir_and_finished_runs(tmp_path, capsys):
    with pytest.raises(LeannetError, match="has no results_dir"):
        publish_suite(write_suite(tmp_path))
    path = write_suite(tmp_path, extra=f"results_dir: {tmp_path / 'published'}\n")
    assert main(["publish", str(path)]) == 0 and "nothing to publish" in capsys.readouterr().out
    assert not (tmp_path / "published").exists()


def test_report_keeps_suite_order_and_never_overwrites_silently(tmp_path, capsys):
    path = write_suite(tmp_path, variants="  zeta: {}\n  alpha: {}\n")
    _, runs = load_suite(path)
    for run in runs:
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "results.json").write_text(json.dumps({"name": run.variant, "seed": run.seed, "test_acc": 0.5}))
    run_suite(path)  # writes out/suite.json (the variant order)
    out = tmp_path / "out"
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.index("| zeta |") < text.index("| alpha |")
    assert main(["report", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and (out / "report.md").read_text() == text
    assert main(["report", str(out), "--force", "--title", "again"]) == 0
    assert (out / "report.md").read_text().startswith("# again")


def test_a_suite_run_held_by_another_writer_is_refused(tmp_path):
    from leannet.runlock import RunLock

    path = write_suite(tmp_path)
    _, runs = load_suite(path)
    with RunLock(runs[0].run_dir) as lock:  # flock is per open file: this holds it against run_suite below
        lock.announce()
        with pytest.raises(LeannetError, match=f"run folder {runs[0].run_dir} is in use by pid "):
            run_suite(path)
    assert not (runs[0].run_dir / "config.yaml").exists()
