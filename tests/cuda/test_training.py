"""Every registered method, norm and freeze mode, Knowledge Evolution and the spiking nets train two steps on
CUDA in float32 and in mixed precision (bf16-mixed, 16-mixed), or are refused with one line where they cannot.

The cases come from the registries (tests/cuda/cases.py), so a newly registered technique is covered.
"""

from __future__ import annotations

import math

import pytest

from leannet.errors import LeannetError
from leannet.method import METHODS
from leannet.train.precision import precision_refusal

from .cases import all_cases, train_case

pytestmark = [pytest.mark.cuda, pytest.mark.fashion]
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
CASES = all_cases()


def method_of(overrides: list[str]) -> str:
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("method.name=")]
    return names[-1] if names else "ce"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_trains_or_refuses(case, precision, device, tmp_path):
    overrides = CASES[case]
    method = method_of(overrides)
    refusal = precision_refusal(precision, device, method, METHODS.get(method).precision_refusals)
    if refusal is not None:
        with pytest.raises(LeannetError) as info:
            train_case(overrides, tmp_path, device, precision)
        assert str(info.value) == refusal and "\n" not in refusal
        assert not (tmp_path / "case").exists()
        return
    results = train_case(overrides, tmp_path, device, precision)
    assert results["epochs"] >= 1
    scores = [v for k, v in results.items() if k.startswith(("test_acc", "test_loss")) and isinstance(v, float)]
    assert scores and all(math.isfinite(v) for v in scores), results
