import json

import pytest

from leannet.errors import LeannetError
from leannet.multitask.report import load_runs, write_report
from leannet.multitask.train import load_config, run

TINY = ["epochs=1", "data.train_count=48", "data.test_count=16", "data.size=16", "data.batch_size=16",
        "model.widths=[4,8]", "model.blocks=[1,2]", "model.strides=[1,2]", "model.head_dilations=[1]",
        "adashare.warmup_epochs=1", "adashare.search_epochs=2", "adashare.samples=2", "threads=1"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path / "data"))
    return lambda *extra: load_config("recipes/multitask/scenes.yaml", [*TINY, f"out_dir={tmp_path}/runs", *extra])


def test_every_method_runs_and_reports(tiny, tmp_path):
    results = [run(tiny(f"method={m}", "random.counts=[1,2,3]" if m == "random" else "seed=0"))
               for m in ("single", "hard", "adashare", "random")]
    for r in results:
        assert set(r["metrics"]) == {"segmentation", "depth", "normals"}
        assert 0 <= r["metrics"]["segmentation"]["miou"] <= 1 and r["params"] > 0
    single, hard, ada, rand = results
    assert single["params"] > hard["params"]  # three backbones vs one
    assert rand["executed_blocks"] == {"segmentation": 1, "depth": 2, "normals": 3}
    phases = [e["phase"] for e in ada["log"]]
    assert phases[:4] == ["warmup", "search", "search", "select"] and phases[-1] == "train"
    assert [e["learnable"] for e in ada["log"] if e["phase"] == "search"] == [1, 2]
    assert len(ada["p_execute"]) == 3 and len(ada["policy"][0]) == 3
    saved = json.loads((tmp_path / "runs" / "scenes-adashare-seed0" / "results.json").read_text())
    assert saved["policy"] == ada["policy"]
    text = write_report(load_runs([tmp_path / "runs"]), tmp_path / "report")
    assert "AdaShare" in text and "Δm" in text and (tmp_path / "report" / "policy_seed0.png").is_file()


def test_config_errors():
    with pytest.raises(LeannetError, match="valid: single, hard, random, adashare"):
        load_config("recipes/multitask/scenes.yaml", ["method=magic"])
    with pytest.raises(LeannetError, match="tasks must be distinct names"):
        load_config("recipes/multitask/scenes.yaml", ["tasks=[segmentation,colour]"])
    with pytest.raises(LeannetError, match="bad multitask config"):
        load_config("recipes/multitask/scenes.yaml", ["optim.nope=1"])


def test_compare_skips_published_runs_and_adds_a_seed(tiny, tmp_path, capsys):
    from leannet.multitask.__main__ import compare

    overrides = [*TINY, f"out_dir={tmp_path}/runs"]  # the tiny fixture points LEANNET_DATA at tmp_path
    compare("recipes/multitask/scenes.yaml", overrides, [0], tmp_path / "out", ("hard",))
    first = (tmp_path / "out" / "per_run" / "hard-seed0.json").read_text()
    capsys.readouterr()
    compare("recipes/multitask/scenes.yaml", overrides, [0, 1], tmp_path / "out", ("hard",))
    out = capsys.readouterr().out
    assert "hard seed 0: done" in out and "hard seed 1: done" not in out
    assert (tmp_path / "out" / "per_run" / "hard-seed0.json").read_text() == first  # not trained again
    assert json.loads((tmp_path / "out" / "per_run" / "hard-seed1.json").read_text())["seed"] == 1


def test_a_second_run_with_the_same_name_keeps_the_first(tiny, tmp_path):
    first = run(tiny("method=hard"))
    second = run(tiny("method=hard"))
    assert first["run_dir"] == str(tmp_path / "runs" / "scenes-hard-seed0")
    assert second["run_dir"] == str(tmp_path / "runs" / "scenes-hard-seed0-2")
    assert json.loads((tmp_path / "runs" / "scenes-hard-seed0" / "results.json").read_text())["seconds"] == \
        first["seconds"]


def test_value_errors_and_report_inputs(tmp_path):
    with pytest.raises(LeannetError, match="epochs must be >= 1, got 0; set e.g. epochs=10"):
        load_config("recipes/multitask/scenes.yaml", ["epochs=0"])
    with pytest.raises(LeannetError, match="optim.lr must be >= 0"):
        load_config("multitask/scenes", ["optim.lr=-1"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LeannetError, match="bad.json is not valid JSON"):
        load_runs([tmp_path / "bad.json"])
