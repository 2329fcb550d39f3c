"""Checkpoints move between the CPU and CUDA, and `leannet explain` dissects a layer on CUDA."""

from __future__ import annotations

import json

import pytest
import torch

from leannet.cli import main
from leannet.runio import safe_torch_load
from leannet.train import resume, train
from leannet.train.run import load_trained

pytestmark = [pytest.mark.cuda, pytest.mark.fashion]


def test_cuda_run_loads_on_the_cpu_and_resumes_on_the_cpu(tiny_recipe, tmp_path, device):
    run = tmp_path / "on_cuda"
    train(tiny_recipe(f"trainer.accelerator={device}", "trainer.max_epochs=1", "trainer.limit_train_batches=3"),
          run_dir=run)
    state = safe_torch_load(run / "checkpoints" / "last.ckpt")  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in state["state_dict"].values())
    raw = torch.load(run / "checkpoints" / "last.ckpt", map_location=device, weights_only=True)
    assert all(t.device.type == torch.device(device).type for t in raw["state_dict"].values())
    _, built = load_trained(run)  # what `leannet eval` does, on the CPU
    assert next(built.method.parameters()).device.type == "cpu"
    results = resume(run, ["trainer.accelerator=cpu", "trainer.max_epochs=2"])
    assert results["epochs"] == 2 and results["test_acc"] is not None


def test_cpu_run_resumes_on_cuda(tiny_recipe, tmp_path, device):
    run = tmp_path / "on_cpu"
    train(tiny_recipe("trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=3"),
          run_dir=run)
    results = resume(run, [f"trainer.accelerator={device}", "trainer.max_epochs=2"])
    assert results["epochs"] == 2 and results["test_acc"] is not None
    assert safe_torch_load(run / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_explain_on_cuda(tiny_recipe, tmp_path, monkeypatch, capsys, device):
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path / "data"))  # the scenes probe cache goes here
    train(tiny_recipe("data.name=digits", "data.few_shot=null", "data.val_size=100", "data.augment=none",
                      f"trainer.accelerator={device}", "trainer.max_epochs=1"), run_dir=tmp_path / "digits")
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "digits"), "--layer", "layer3", "--probe", "scenes", "--count", "64",
                 "--max-length", "2", "--device", device, "--out", str(tmp_path / "explained")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["units"] > 0 and 0 <= summary["mean_iou"] <= 1
