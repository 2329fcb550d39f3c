"""Multi-task methods on the shared trainer: hard sharing, fixed / random policies, AdaShare end to end,
resume, the report, and the test that the search privatises the blocks a conflicting task cannot use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leannet.cli import main as leannet_main
from leannet.config import load_recipe
from leannet.data.base import DATASETS
from leannet.data.dense import TaskSplit, scenes_tasks
from leannet.errors import LeannetError
from leannet.multitask.report import load_runs, write_report
from leannet.train.run import resume, train

TINY = ["data.args.size=16", "data.args.train_count=60", "data.args.test_count=20", "data.val_size=20",
        "data.batch_size=20", "model.args.widths=[4,8]", "model.args.blocks=[1,2]", "model.args.strides=[1,2]",
        "model.args.head_dilations=[1]", "trainer.max_epochs=1", "trainer.progress=none"]
SEARCH = ["method.warmup_epochs=1", "method.search_epochs=1", "method.samples=2"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path / "data"))
    return lambda *extra: load_recipe("multitask/scenes", [*TINY, f"out_dir={tmp_path}/runs", *extra])


def test_hard_single_fixed_and_random_policies(tiny, tmp_path):
    hard = train(tiny("name=hard"))
    single = train(tiny("name=single", "data.args.tasks=[depth]"))
    fixed = train(tiny("name=fixed", "method.policy=[[1,1,1],[1,0,0],[0,1,1]]"))
    rand = train(tiny("name=random", f"method.random_like={tmp_path}/runs/fixed"))
    for r in (hard, fixed, rand):
        assert {"test_segmentation/miou", "test_depth/abs_err", "test_normals/mean_angle"} <= set(r)
        assert 0 <= r["test_segmentation/miou"] <= 1 and r["test_depth/abs_err"] > 0
    assert single["tasks"] == ["depth"] and "test_segmentation/miou" not in single
    assert hard["executed_blocks"] == {"segmentation": 3, "depth": 3, "normals": 3}
    assert fixed["executed_blocks"] == {"segmentation": 3, "depth": 1, "normals": 2}
    assert rand["executed_blocks"] == fixed["executed_blocks"]
    assert fixed["deployed_params"] == hard["deployed_params"]  # every block is still run by some task
    weights = hard["task_weights"]  # balance: grad_norm in the recipe
    # measured under hard sharing, so every variant of one seed gets the same task weights
    assert fixed["task_weights"] == weights == rand["task_weights"]
    assert len(set(np.round(list(weights.values()), 6))) == 3 and np.mean(list(weights.values())) > 0
    rows = (tmp_path / "runs" / "hard" / "metrics.csv").read_text().splitlines()
    assert "val/segmentation/miou" in rows[0] and "val/loss" in rows[0] and len(rows) == 2


def test_adashare_from_a_hard_run_keeps_the_argmax_policy(tiny, tmp_path):
    """The default recipe: the search starts from a finished hard-sharing run (its weights and task weights),
    trains the network with SGD 0.9, and keeps the most probable policy (blocks before skip_layer executed)."""
    hard = train(tiny("name=hard"))
    result = train(tiny("name=ada", "method.name=adashare", "method.search_epochs=2",
                        f"method.init_from={tmp_path}/runs/hard", "method.skip_layer=1"))
    stage = tmp_path / "runs" / "ada" / "search"
    record = json.loads((stage / "policy.json").read_text())
    p = np.array(record["p_execute"])
    expected = (p >= 0.5).astype(int)
    expected[:, :1] = 1
    assert record["final"] == "argmax" and record["chosen"] == expected.tolist() == result["policy"]
    search = load_recipe(stage / "config.yaml")
    assert search.optim.name == "sgd" and search.optim.momentum == 0.9 and search.schedule.name == "constant"
    assert len((stage / "metrics.csv").read_text().splitlines()) == 1 + 4  # no warm-up epoch: 2 × (weights, policy)
    assert json.loads((stage / "results.json").read_text())["task_weights"] == hard["task_weights"]
    assert result["task_weights"] == hard["task_weights"]
    trajectory = np.array(record["p_execute_per_epoch"])  # after each of the 2 policy epochs
    assert trajectory.shape == (2, 3, 3) and np.allclose(trajectory[-1], p)
    write_report(load_runs([tmp_path / "runs"]), tmp_path / "report")
    assert (tmp_path / "report" / "search_ada_seed0.png").is_file()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())  # no single-task run here: no Δm
    assert summary["ada"]["executed_blocks"]["depth"][0] == expected[1].sum()


def test_adashare_without_a_hard_run_warms_up_by_hard_sharing_first(tiny, tmp_path):
    result = train(tiny("name=ada", "method.name=adashare", "method.search_epochs=1"))
    warm = json.loads((tmp_path / "runs" / "ada" / "warmup" / "results.json").read_text())
    assert warm["executed_blocks"] == {"segmentation": 3, "depth": 3, "normals": 3}
    search = load_recipe(tmp_path / "runs" / "ada" / "search" / "config.yaml")
    assert search.method.init_from == str(tmp_path / "runs" / "ada" / "warmup")
    assert result["task_weights"] == warm["task_weights"]


def test_adashare_best_of_samples_chooses_on_val_and_retrains(tiny, tmp_path):
    result = train(tiny("name=ada", "method.name=adashare", "method.final=best_of_samples", *SEARCH))
    record = json.loads((tmp_path / "runs" / "ada" / "search" / "policy.json").read_text())
    assert record["final"] == "best_of_samples" and len(record["candidates"]) == 3 == len(record["losses"])
    assert record["chosen"] == record["candidates"][int(np.argmin(record["losses"]))] == result["policy"]
    assert np.array(result["search_p_execute"]).shape == (3, 3)
    search_rows = (tmp_path / "runs" / "ada" / "search" / "metrics.csv").read_text().splitlines()
    assert len(search_rows) == 1 + 3  # warm-up, weights, policy epochs
    assert "train/p_execute/depth/2" in search_rows[0]
    # a second call of the finished run trains nothing again: the saved config holds the policy
    saved = load_recipe(tmp_path / "runs" / "ada" / "config.yaml")
    assert saved.method.policy == result["policy"]
    text = write_report(load_runs([tmp_path / "runs"]), tmp_path / "report")
    assert "ada" in text and (tmp_path / "report" / "policy_ada_seed0.png").is_file()


def test_search_resumes_exactly(tiny, tmp_path):
    from leannet.train.callbacks import FailAfterEpoch

    config = tiny("name=search", "method.name=adashare_search", "method.warmup_epochs=1", "method.search_epochs=1",
                  "trainer.max_epochs=3", "schedule.name=constant")
    full = train(config, run_dir=tmp_path / "full")
    with pytest.raises(InterruptedError):
        train(config, run_dir=tmp_path / "cut", callbacks=[FailAfterEpoch(2)])
    resumed = resume(tmp_path / "cut")
    assert np.allclose(resumed["p_execute"], full["p_execute"], atol=1e-6)
    assert resumed["test_depth/abs_err"] == pytest.approx(full["test_depth/abs_err"], rel=1e-5)


def test_adashare_under_ddp(tmp_path):
    """Two CPU processes (gloo), plain `ddp`: the search (whose logits or weights get no gradient in some
    epochs) switches to finding unused parameters; search and re-train land in one run directory."""
    argv = [sys.executable, "-m", "leannet.cli", "train", "multitask/scenes", *TINY, "data.args.train_count=80",
            "data.batch_size=10", f"out_dir={tmp_path}", "name=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "trainer.threads=1", "method.name=adashare", *SEARCH]
    env = dict(os.environ, PYTHONPATH=str(REPO), LEANNET_DATA=str(tmp_path / "data"))
    result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.parent for p in tmp_path.rglob("results.json")) == [tmp_path / "ddp", tmp_path / "ddp" / "search"]
    chosen = json.loads((tmp_path / "ddp" / "search" / "policy.json").read_text())["chosen"]
    assert load_recipe(tmp_path / "ddp" / "config.yaml").method.policy == chosen


def test_multitask_cli_run_report_and_what_replaced_compare(tiny, tmp_path, capsys):
    overrides = [*TINY, f"out_dir={tmp_path}/runs", "name=cli"]
    assert leannet_main(["multitask", "run", "multitask/scenes", *overrides]) == 0
    assert leannet_main(["multitask", "report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "table.md").is_file()
    assert leannet_main(["multitask", "compare", "recipes/multitask/scenes.yaml"]) == 2
    assert "leannet suite multitask/suite_scenes" in capsys.readouterr().err


def test_bad_multitask_settings_are_one_line_errors(tiny, tmp_path):
    with pytest.raises(LeannetError, match="needs model.name=adashare_resnet|dense multi-task data"):
        train(tiny("model.name=resnet8"))
    with pytest.raises(LeannetError, match="method.policy must be 3 rows"):
        train(tiny("method.policy=[[1,1]]"))
    with pytest.raises(LeannetError, match="valid: none, grad_norm"):
        train(tiny("method.balance=magic"))
    with pytest.raises(LeannetError, match="not tasks of the data"):
        train(tiny("method.task_weights={edges: 2.0}"))
    with pytest.raises(LeannetError, match="cannot read the executed blocks"):
        train(tiny(f"method.random_like={tmp_path}/nowhere"))
    with pytest.raises(LeannetError, match="set data.val_size > 0"):
        train(tiny("data.val_size=0", "method.name=adashare", "method.final=best_of_samples", *SEARCH))
    with pytest.raises(LeannetError, match="valid: argmax, sample, best_of_samples"):
        train(tiny("method.name=adashare", "method.final=best"))
    with pytest.raises(LeannetError, match="init_from.*not found"):
        train(tiny("method.name=adashare", f"method.init_from={tmp_path}/none"))
    with pytest.raises(LeannetError, match="data.args.tasks"):
        train(tiny("data.args.tasks=[colour]"))


@DATASETS.register("conflict_scenes")
def conflict_scenes(root, train, size=16, train_count=400, test_count=100, scene_seed=0, tasks=()):
    """Scenes with two tasks: segmentation, and in the depth slot the image's grey level, a pixel-level
    target that the segmentation-tuned last blocks destroy (a task known to conflict with segmentation there)."""
    s = scenes_tasks(root, train, size=size, train_count=train_count, test_count=test_count,
                     scene_seed=scene_seed, tasks=("segmentation",))
    grey = s.images.float().mean(1) / 255 + 0.5
    return TaskSplit(s.images, {"segmentation": s.targets["segmentation"], "depth": grey},
                     {"segmentation": s.channels["segmentation"], "depth": 1})


@pytest.mark.parametrize("sharing", [0.0, 0.05])
def test_search_makes_the_conflicting_tasks_last_block_private(sharing, tmp_path, monkeypatch):
    """With λ_sh = 0 the search keeps executing the last block for segmentation and learns to skip it for
    the grey-level task: p(execute) separates by > 0.3. With the paper's λ_sh = 0.05 the sharing loss (under
    Adam, its constant L1 gradient outweighs the task losses') keeps the two tasks' logits tied."""
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path / "data"))
    torch.manual_seed(0)
    config = load_recipe("multitask/scenes", [
        "data.name=conflict_scenes", "data.args.size=16", "data.args.train_count=400", "data.args.test_count=100",
        "data.val_size=0", "data.batch_size=20", "model.args.widths=[8,16,16]", "model.args.blocks=[2,2,2]",
        "trainer.progress=none",
        f"out_dir={tmp_path}/runs", "method.name=adashare_search", "method.warmup_epochs=2", "method.search_epochs=12",
        "method.sparsity=0.01", f"method.sharing={sharing}", "method.balance=none", "method.policy_lr=0.05",
        "method.sharing_form=paper", "method.sparsity_form=paper", "method.tau_final=0.1",
        "trainer.max_epochs=26", "schedule.name=constant", "seed=0"])
    p = np.array(train(config)["p_execute"])
    if sharing == 0:
        assert p[0, -1] - p[1, -1] > 0.3, np.round(p, 2)
    else:
        assert np.abs(p[0] - p[1]).max() < 0.05, np.round(p, 2)


def test_policy_probe_scores_fixed_weights_under_each_policy(tiny, tmp_path, monkeypatch):
    """scripts/adashare_policy_probe.py: the hard run's own policy reproduces its test metrics (BN re-estimated
    over the training split, close to the running statistics); a task skipping blocks changes only that task."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import adashare_policy_probe as probe

    hard = train(tiny("name=hard", "trainer.max_epochs=2"))
    name, skip = probe.parse_policy("skip=1,1,1/1,1,1/1,0,0")
    assert name == "skip" and skip.tolist() == [[True] * 3, [True] * 3, [True, False, False]]
    scores = probe.probe(tmp_path / "runs" / "hard", {"all": torch.ones(3, 3, dtype=torch.bool), "skip": skip})
    assert scores["all"]["depth"]["abs_err"] == pytest.approx(hard["test_depth/abs_err"], rel=0.05)
    assert scores["skip"]["segmentation"] == scores["all"]["segmentation"]
    assert scores["skip"]["normals"] != scores["all"]["normals"]
    with pytest.raises(LeannetError, match="name=1,1,0/1,1,1"):
        probe.parse_policy("bad=1,x")
    with pytest.raises(LeannetError, match="tasks × blocks"):
        probe.probe(tmp_path / "runs" / "hard", {"short": torch.ones(3, 2, dtype=torch.bool)})
