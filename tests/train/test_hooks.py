"""Generic trainer extensions: `trainer.gradient_clip_val` and the `Method.after_step` hook."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leannet.config import load_recipe
from leannet.train import run as run_module
from leannet.train.methods import METHODS, Method, register_method


class _Counting(Method):
    calls = 0

    def forward(self, batch):
        x, y = batch
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits, y) * 1e3, "logits": logits}

    def after_step(self) -> None:
        type(self).calls += 1
        with torch.no_grad():
            for p in self.model.parameters():
                p.clamp_(-0.01, 0.01)


def test_after_step_and_gradient_clip(tmp_path, monkeypatch):
    if "_test_counting" not in METHODS:
        register_method("_test_counting")(_Counting)
    seen = {}
    real = run_module.make_trainer

    def spy(*args, **kwargs):
        trainer = real(*args, **kwargs)
        seen["clip"] = trainer.gradient_clip_val
        return trainer

    monkeypatch.setattr(run_module, "make_trainer", spy)
    config = load_recipe(None, [
        f"out_dir={tmp_path}", "name=hook", "data.name=digits", "data.val_size=0", "data.batch_size=256",
        "data.augment=none", "model.name=mlp", "method.name=_test_counting", "trainer.max_epochs=2",
        "trainer.gradient_clip_val=0.5", "trainer.progress=none", "trainer.accelerator=cpu",
    ])
    _Counting.calls = 0
    run_module.train(config)
    assert seen["clip"] == 0.5
    assert _Counting.calls == 2 * (1437 // 256)  # one call per optimizer step (last partial batch dropped)
    _, built = run_module.load_trained(tmp_path / "hook")
    assert all(p.abs().max() <= 0.01 for p in built.method.model.parameters())
