"""`leannet explain` on a tiny trained run (digits, one epoch) with a Broden-format and a scenes probe."""

import json

from leannet.cli import main
from leannet.train import train

from .test_broden import write_broden


def test_explain_cli_smoke(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEANNET_DATA", str(tmp_path / "data"))   # the scenes probe cache goes here
    config = tiny_recipe("data.name=digits", "data.few_shot=null", "data.val_size=100", "data.augment=none",
                         "trainer.max_epochs=1")
    train(config)
    run_dir = str(tmp_path / "runs" / "tiny")
    capsys.readouterr()
    write_broden(tmp_path / "broden", size=8)
    out = tmp_path / "out"
    assert main(["explain", run_dir, "--layer", "layer3", "--probe", f"broden:{tmp_path / 'broden'}",
                 "--max-length", "2", "--out", str(out), "--top", "3", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "cache" / "acts_layer3.npy").is_file()
    summary = json.loads(capsys.readouterr().out)
    assert summary["units"] == len(json.loads((out / "units.json").read_text()))
    header = (out / "units.csv").read_text().splitlines()[0]
    assert header.startswith("unit,formula,iou,length,label,label_iou")
    assert "<img src='units/unit_" in (out / "report.html").read_text()
    assert any(p.suffix == ".png" for p in (out / "units").iterdir())

    assert main(["explain", run_dir, "--layer", "layer3", "--probe", "scenes", "--count", "64",
                 "--max-length", "3"]) == 0
    rows = json.loads((tmp_path / "runs" / "tiny" / "explain" / "layer3" / "units.json").read_text())
    assert all(r["length"] <= 3 and 0 <= r["iou"] <= 1 for r in rows)

    assert main(["explain", run_dir, "--layer", "nope", "--probe", "scenes", "--count", "8"]) == 2
    assert "no layer 'nope'" in capsys.readouterr().err


def test_explain_device_names():
    import pytest
    import torch

    from leannet.errors import LeannetError
    from leannet.explain.report import torch_device

    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LeannetError, match="unknown --device 'gpu0'"):
        torch_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LeannetError, match="--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu"):
            torch_device("cuda")
