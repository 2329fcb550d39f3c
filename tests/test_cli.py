import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leannet.cli import main

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "baseline" / "fashion_mnist.yaml")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("what", ["models", "datasets", "methods", "norms"])
def test_list(capsys, what):
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0
    expected = {"models": "resnet20", "datasets": "fashion_mnist", "methods": "label_smoothing", "norms": "bn"}
    assert expected[what] in out.split()


def test_list_models_names_the_patterns(capsys):
    out = run_cli(capsys, "list", "models")[1]
    assert "snn_<spec>" in out and "resnetD" in out and "tv:<name>" in out


def test_catalog_is_current():
    from leannet.catalog import CATALOG

    code = "import json; from leannet.catalog import live_catalog; print(json.dumps(live_catalog()))"
    live = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert json.loads(CATALOG.read_text()) == json.loads(live), "run `python -m leannet.catalog` and commit"


def timed(argv: list[str]) -> tuple[float, str]:
    """Wall time of a fresh `leannet ARGV` process (start-up included) and its stderr."""
    code = ("import sys\nfrom leannet.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=30)
    return time.perf_counter() - start, done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["list", "models"], ["train", "--help"]])
def test_help_and_list_are_fast_and_import_no_torch(argv):
    seconds, err = min(timed(argv) for _ in range(3))  # the best of three: the machine may be busy
    assert err.endswith("no torch\n") and seconds < 1.5, (seconds, err[-500:])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", RECIPE, "optim.lr=abc"], "bad value for 'optim.lr'"),
        (["train", RECIPE, "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["train", RECIPE, "model.name=resnet21"], "6n+2"),
        (["train", RECIPE, "model.name=nosuchnet"], "unknown model 'nosuchnet'; valid models: "),
        (["train", RECIPE, "data.name=imagenet22k"], "unknown dataset 'imagenet22k'; valid datasets: "),
        (["train", RECIPE, "method.name=kd9"], "unknown method 'kd9'; valid methods: "),
        (["train", "missing.yaml"], "config file not found: missing.yaml"),
        (["train"], "give a recipe"),
        (["report", "/nonexistent/run"], "no such run directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, *argv, *([f"out_dir={tmp_path}"] if argv[0] == "train" and len(argv) > 1 else []))
    assert code == 2
    assert err.startswith("leannet: error: ") and message in err
    assert err.count("\n") == 1


def test_help_at_every_level():
    for argv in ([], ["train"], ["suite"], ["eval"], ["report"], ["data"], ["data", "fetch"], ["list"]):
        result = subprocess.run([sys.executable, "-m", "leannet.cli", *argv, "--help"], capture_output=True,
                                text=True, cwd=REPO)
        assert result.returncode == 0 and "usage: leannet" in result.stdout, argv


@pytest.mark.fashion
def test_train_eval_report_round_trip(capsys, tmp_path):
    common = [f"out_dir={tmp_path}", "name=cli", "data.few_shot=30", "data.val_size=100", "data.batch_size=50",
              "model.name=mlp", "trainer.max_epochs=1", "trainer.progress=none"]
    code, out, _ = run_cli(capsys, "train", RECIPE, *common)
    assert code == 0
    results = json.loads(out[out.index("{"):])
    assert results["epochs"] == 1
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "cli"), "--checkpoint", "best")
    assert code == 0
    evaluated = json.loads(out[out.index("{"):])
    assert evaluated["test/acc"] == pytest.approx(results["test_acc_at_best_val"], abs=1e-6)
    code, out, _ = run_cli(capsys, "report", str(tmp_path))
    assert code == 0 and "| cli | 1 | 1 |" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.fashion
@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """Lightning DDP over gloo with 2 CPU processes completes and writes the same results format."""
    argv = [sys.executable, "-m", "leannet.cli", "train", RECIPE, f"out_dir={tmp_path}", "name=ddp",
            "data.few_shot=40", "data.val_size=100", "data.batch_size=40", "model.name=resnet8", "model.width=0.5",
            "trainer.max_epochs=1", "trainer.progress=none", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "trainer.threads=1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = [p.parent for p in tmp_path.rglob("results.json")]
    assert run_dirs == [tmp_path / "ddp"]  # both ranks wrote into one run directory
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["epochs"] == 1 and 0.0 <= results["test_acc"] <= 1.0
    assert results["images_per_s"] > 0


def test_every_argument_of_every_command_has_help():
    import argparse

    from leannet.cli import parser

    def commands(p: argparse.ArgumentParser, prefix: str = ""):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from commands(child, f"{prefix} {name}")
        yield prefix, p

    missing = [f"{name}: {action.dest}" for name, p in commands(parser()) for action in p._actions
               if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help]
    assert missing == []
