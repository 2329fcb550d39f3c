"""Every bad input of issue 18 through the real CLI: exit code 2, one stderr line naming the key or file and
the fix, no traceback, and nothing written or changed (no partial run folder, no tracked file modified)."""

import errno
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from leannet.cli import main as leannet_main

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.name=digits", "data.val_size=100", "data.few_shot=10", "data.batch_size=50", "model.name=mlp",
        "trainer.max_epochs=1", "trainer.threads=1", "trainer.progress=none"]


def git_status() -> str | None:
    result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                            capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_dir()}


def write_idx(raw: Path, prefix: str, labels: list[int]) -> None:
    """A tiny MNIST-format split (blank 28×28 images) with the given label bytes."""
    raw.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 784))
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(labels))


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run (digits, MLP, 1 epoch) for the --resume and explain cases."""
    out = tmp_path_factory.mktemp("trained")
    assert leannet_main(["train", "fashion_mnist", *TINY, f"out_dir={out}", "name=done"]) == 0
    return out / "done"


@pytest.fixture
def place(tmp_path, trained):
    """Fills the argv placeholders, creating what a case needs; unmounts what it mounted."""
    mounts: list[Path] = []
    values = {"tmp": str(tmp_path), "run": str(trained), "torch_home": str(tmp_path / "torch")}

    def fill(argv: list[str]) -> list[str]:
        text = " ".join(argv)
        if "{file}" in text:
            (tmp_path / "a_file").write_text("not a folder")
            values["file"] = str(tmp_path / "a_file")
        if "{empty}" in text:
            (tmp_path / "empty").mkdir(exist_ok=True)
            values["empty"] = str(tmp_path / "empty")
        if "{badcsv}" in text and "badcsv" not in values:  # a copy of the finished run whose metrics.csv is garbage
            shutil.copytree(trained, tmp_path / "badcsv")
            (tmp_path / "badcsv" / "metrics.csv").write_bytes(b"epoch,step,val/acc\n0,12,\xff\xfe oops\n")
            values["badcsv"] = str(tmp_path / "badcsv")
        if "{data}" in text:
            write_idx(tmp_path / "data" / "MNIST" / "raw", "train", [i % 10 for i in range(199)] + [200])
            write_idx(tmp_path / "data" / "MNIST" / "raw", "t10k", [i % 10 for i in range(20)])
            values["data"] = str(tmp_path / "data")
        if "{ro}" in text and "ro" not in values:
            ro = tmp_path / "ro"
            if mount_tmpfs(ro, "ro,size=64k"):
                mounts.append(ro)
                values["ro_reason"] = "read-only file system"
            elif os.geteuid() != 0:
                ro.chmod(0o555)
                values["ro_reason"] = "permission denied"
            else:
                pytest.skip("needs a read-only folder: root ignores permissions and cannot mount tmpfs here")
            values["ro"] = str(ro)
        if "{full}" in text and "full" not in values:
            full = tmp_path / "full"
            if not mount_tmpfs(full, "size=256k"):
                pytest.skip("needs a full file system: mounting a small tmpfs needs root")
            mounts.append(full)
            try:
                with open(full / "filler", "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC
            values["full"] = str(full)
        return [a.format(**values) for a in argv]

    yield fill
    for path in mounts:
        subprocess.run(["umount", str(path)], check=False)


T = ["train", "fashion_mnist", *TINY, "out_dir={tmp}/runs"]
NO_TENSORBOARD = not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))
CASES = {  # id: (argv, what stderr must say, through a subprocess)
    "precision": ([*T, "trainer.precision=nosuch"], "trainer.precision 'nosuch'; valid values: 32-true", True),
    "max_epochs_0": ([*T, "trainer.max_epochs=0"], "trainer.max_epochs must be >= 1, got 0", False),
    "max_epochs_neg": ([*T, "trainer.max_epochs=-1"], "trainer.max_epochs must be >= 1, got -1", False),
    "batch_size_0": ([*T, "data.batch_size=0"], "data.batch_size must be >= 1, got 0; set e.g.", False),
    "batch_size_neg": ([*T, "data.batch_size=-5"], "data.batch_size must be >= 1, got -5", False),
    "lr_neg": ([*T, "optim.lr=-0.1"], "optim.lr must be >= 0, got -0.1; set e.g. optim.lr=0.1", False),
    "progress": ([*T, "trainer.progress=nosuch"], "trainer.progress 'nosuch'; valid values: auto, bar, none", False),
    "threads_0": ([*T, "trainer.threads=0"], "trainer.threads must be >= 1, got 0", False),
    "optimizer": ([*T, "optim.name=nosuch"], "unknown optim.name 'nosuch'; valid values: adamw, sgd", False),
    "momentum_2": ([*T, "optim.momentum=2"], "optim.momentum must be < 1, got 2; set e.g. optim.momentum=0.9",
                   False),
    "momentum_1": ([*T, "optim.momentum=1.0"], "optim.momentum must be < 1, got 1; set", False),
    "momentum_neg": ([*T, "optim.momentum=-0.5"], "optim.momentum must be >= 0, got -0.5", False),
    "betas": ([*T, "optim.name=adamw", "optim.betas=[0.9,1.5]"],
              "optim.betas must be two numbers in [0, 1), got [0.9, 1.5]; set e.g. optim.betas=[0.9,0.999]", False),
    "generations_0": ([*T, "evolve.generations=0"], "evolve.generations must be >= 1 (1 = off), got 0", False),
    "evolve_split": ([*T, "evolve.split=kelz"], "unknown evolve.split 'kelz'; valid values: kels, wels", False),
    "evolve_reinit": ([*T, "evolve.reinit=kaiming"], "unknown evolve.reinit 'kaiming'; valid values: ", False),
    "evolve_rate": ([*T, "evolve.rate=2"], "evolve.rate must be in (0, 1], got 2", False),
    "evolve_key": ([*T, "evolve.generatons=3"],
                   "valid keys under 'evolve': generations, rate, reinit, slim_eval, split", False),
    "key_value_first": (["train", "optim.lr=0.1"], "'optim.lr=0.1' is an override, not a recipe", True),
    "resume_other_model": (["train", "--resume", "{run}", "model.name=resnet8", "model.width=0.5"],
                           "was written by another model or method than the run's config", False),
    "out_dir_read_only": ([*T[:-1], "out_dir={ro}/runs"],
                          "cannot write to out_dir {ro}/runs: {ro_reason}; set out_dir= to a writable folder", False),
    "out_dir_full": ([*T[:-1], "out_dir={full}/runs"], "no space left on the device; set out_dir=", False),
    "out_dir_file": ([*T[:-1], "out_dir={file}"], "out_dir {file} cannot be a folder: it is a file", False),
    "out_dir_below_file": ([*T[:-1], "out_dir={file}/runs"], "{file} is a file; set out_dir=", False),
    "label_out_of_range": ([*T, "data.name=mnist", "data.root={data}", "data.few_shot=null"],
                           "labels of dataset 'mnist' in {data} include 200, outside 0..9", False),
    "tensorboard": ([*T, "trainer.tensorboard=true"], "pip install 'leannet[tensorboard]'", False),
    "timm_pretrained": ([*T, "model.name=timm:test_resnet", "model.args.pretrained=true"],
                        "pretrained weights for timm:test_resnet not found: expected {torch_home}/hub/checkpoints/",
                        False),
    "tv_weights": ([*T, "model.name=tv:mobilenet_v3_small", "model.args.weights=DEFAULT"],
                   "expected {torch_home}/hub/checkpoints/mobilenet_v3_small-047dcff4.pth; download", False),
    "tv_weights_name": ([*T, "model.name=tv:mobilenet_v3_small", "model.args.weights=NOSUCH"],
                        "unknown model.args.weights 'NOSUCH' for tv:mobilenet_v3_small; valid: DEFAULT", False),
    "tv_pretrained_key": ([*T, "model.name=tv:resnet18", "model.args.pretrained=true"],
                          "argument 'pretrained'; remove it (pretrained weights: model.args.weights)", False),
    "rbn_on_layernorm": ([*T, "model.name=timm:test_vit", "model.norm=rbn"],
                         "model.norm=rbn replaces BatchNorm2d layers, but timm:test_vit has none", False),
    "bn_only_on_layernorm": ([*T, "model.name=timm:test_vit", "freeze.mode=bn_only"],
                             "freeze.mode=bn_only leaves no trainable parameter", False),
    "explain_count_0": (["explain", "{run}", "--layer", "hidden.1", "--count", "0"],
                        "--count must be an integer >= 1, got 0", True),
    "explain_logits": (["explain", "{run}", "--layer", "fc"], "layer 'fc' is the classifier", False),
    "multitask_batch_size": (["multitask", "run", "multitask/scenes", "data.batch_size=0", "out_dir={tmp}/mt"],
                             "data.batch_size must be >= 1, got 0", False),
    "resume_seed": (["train", "--resume", "{run}", "seed=3"],
                    "--resume cannot change seed (the run trained with 0, the override asks for 3)", False),
    "resume_data": (["train", "--resume", "{run}", "data.few_shot=20"],
                    "--resume cannot change data.few_shot (the run trained with 10, the override asks for 20)",
                    False),
    "resume_corrupt_metrics": (["train", "--resume", "{badcsv}", "trainer.max_epochs=2"],
                               "cannot read {badcsv}/metrics.csv (", False),
    "report_corrupt_metrics": (["report", "{badcsv}"], "cannot read {badcsv}/metrics.csv (", False),
    "multitask_report_missing": (["multitask", "report", "{tmp}/nope", "--out", "{tmp}/report"],
                                 "no such file or directory: {tmp}/nope", True),
    "multitask_report_empty": (["multitask", "report", "{empty}", "--out", "{tmp}/report"],
                               "no multi-task results under {empty} (0 results.json files", False),
    "multitask_report_foreign": (["multitask", "report", "{run}", "--out", "{tmp}/report"],
                                 "no multi-task results under {run} (1 results.json files", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(case, place, tmp_path, trained, capfd, monkeypatch):
    argv, message, in_subprocess = CASES[case]
    if case == "tensorboard" and not NO_TENSORBOARD:
        pytest.skip("tensorboard is installed: the missing-extra message cannot show")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    argv, message = place(argv), place([message])[0]
    before_git, before_tmp, before_run = git_status(), snapshot(tmp_path), snapshot(trained)
    if in_subprocess:
        module = "leannet.multitask" if argv[0] == "multitask" else "leannet.cli"
        result = subprocess.run([sys.executable, "-m", module, *argv[argv[0] == "multitask":]], cwd=tmp_path,
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        code, err = result.returncode, result.stderr
    else:
        code = leannet_main(argv)
        err = capfd.readouterr().err
    assert "Traceback" not in err
    assert code == 2, err
    assert err.startswith("leannet: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert snapshot(tmp_path) == before_tmp  # no run folder, report or data written
    assert snapshot(trained) == before_run  # the resumed run's config.yaml and checkpoints untouched
    assert git_status() == before_git


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_disk_that_fills_up_mid_run_is_one_line(code, monkeypatch, capsys):
    """Past the up-front out_dir check, a write that fails names the file and how to go on."""
    def failing_train(config):
        raise OSError(code, os.strerror(code), "/data/runs/x/checkpoints/last.ckpt")

    monkeypatch.setattr("leannet.train.run.train", failing_train)
    assert leannet_main(["train", "fashion_mnist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write /data/runs/x/checkpoints/last.ckpt: " in err
    assert "`leannet train --resume RUN_DIR`" in err
