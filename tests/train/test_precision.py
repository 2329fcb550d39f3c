"""trainer.precision refusals (a pure function: tested without a GPU), and the deferred non-finite check."""

import pytest
import torch

from leannet.errors import LeannetError
from leannet.method import METHODS, Method, register_method
from leannet.spiking.neurons import lif_psc
from leannet.train import NonFiniteLossError, train
from leannet.train.checks import check_precision
from leannet.train.module import LeanModule
from leannet.train.precision import canonical, device_type, precision_refusal


def test_aliases_and_devices():
    assert [canonical(p) for p in ("16", "bf16", "32", "64", "bf16-mixed")] == \
        ["16-mixed", "bf16-mixed", "32-true", "64-true", "bf16-mixed"]
    assert device_type("auto", cuda_available=True) == "cuda"
    assert device_type("auto", cuda_available=False) == "cpu"
    assert device_type("gpu", cuda_available=False) == "cuda"  # Lightning then says there is no GPU
    assert device_type("cpu", cuda_available=True) == "cpu"


@pytest.mark.parametrize("precision", ["16-mixed", "16", "16-true"])
def test_float16_is_refused_off_cuda(precision):
    reason = precision_refusal(precision, "cpu")
    assert reason.startswith(f"trainer.precision={precision} needs a CUDA GPU") and "bf16-mixed" in reason
    assert "\n" not in reason
    assert precision_refusal(precision, "cuda") is None


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16", "64-true"])
def test_float32_and_bfloat16_run_anywhere(precision):
    assert precision_refusal(precision, "cpu") is None and precision_refusal(precision, "cuda") is None


def test_transformer_engine_is_refused():
    assert "Transformer Engine" in precision_refusal("transformer-engine", "cuda")


def test_a_method_declares_what_it_refuses():
    refusals = METHODS.get("snn_kernel").precision_refusals
    assert set(refusals) == {"16-true", "bf16-true"}
    reason = precision_refusal("bf16-true", "cuda", "snn_kernel", refusals)
    assert reason.startswith("method snn_kernel cannot train at trainer.precision=bf16-true: ")
    assert precision_refusal("bf16-mixed", "cuda", "snn_kernel", refusals) is None
    assert METHODS.get("ce").precision_refusals == {}


def test_check_precision_refuses_before_a_run_folder_exists(tiny_recipe, tmp_path):
    config = tiny_recipe("trainer.accelerator=cpu", "trainer.precision=16-mixed")
    with pytest.raises(LeannetError, match=r"^trainer.precision=16-mixed needs a CUDA GPU"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    spiking = tiny_recipe("model.name=snn_32", "model.norm=none", "method.name=snn_count",
                          "trainer.precision=bf16-true")
    with pytest.raises(LeannetError, match="method snn_count cannot train at trainer.precision=bf16-true"):
        check_precision(spiking)
    check_precision(tiny_recipe("trainer.precision=bf16-mixed"))


@pytest.mark.parametrize("rule", ["tssl", "surrogate"])
def test_spiking_neuron_integrates_half_currents_in_float32(rule):
    torch.manual_seed(0)
    current = (torch.rand(5, 64) * 1.5).requires_grad_()
    reference = lif_psc(current, rule=rule)
    reference.sum().backward()
    half = current.detach().bfloat16().requires_grad_()
    out = lif_psc(half, rule=rule)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and half.grad.dtype == torch.bfloat16
    exact = lif_psc(half.detach().float(), rule=rule)  # the same bf16 inputs, integrated in float32
    torch.testing.assert_close(out.float(), exact, atol=4e-3, rtol=1e-2)


@register_method("nan_after_steps")
class NanAfterSteps(Method):
    """Cross-entropy that turns into NaN after `steps` training steps."""

    def __init__(self, model, num_classes, *, steps: int = 4) -> None:
        super().__init__(model, num_classes)
        self.steps, self.calls = steps, 0

    def forward(self, batch):
        x, y = batch
        logits = self.model(x)
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, y)
        return {"loss": loss * float("nan") if self.calls > self.steps else loss, "logits": logits}


def test_deferred_check_stops_at_the_next_step(tiny_recipe, tmp_path, monkeypatch):
    """The check an accelerator defers (read at the next step or before validation) gives the same error."""
    monkeypatch.setattr(LeanModule, "defer_finite_check", True)
    config = tiny_recipe("method.name=nan_after_steps", "method.steps=22", "trainer.max_epochs=3")
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) in epoch 2, step 23; "
                       r"training stopped and last.ckpt \(end of epoch 1\) is kept"):
        train(config, run_dir=tmp_path / "nan")
    last_step = tiny_recipe("method.name=nan_after_steps", "method.steps=19", "trainer.max_epochs=2")
    with pytest.raises(NonFiniteLossError, match=r"in epoch 1, step 20; .*no checkpoint was written"):
        train(last_step, run_dir=tmp_path / "nan_last")  # the epoch's last step: caught before validation
    assert not (tmp_path / "nan_last" / "checkpoints" / "last.ckpt").exists()
