"""Split masks, re-initialisation, slim extraction and MACs (no data needed)."""

import math

import pytest
import torch
from torch import nn

from leannet.errors import LeannetError
from leannet.evolve import attach_masks, count_macs, get_masks, kels_size, reinitialize, slim, split_masks
from leannet.models import build_model
from leannet.train.callbacks import atomic_torch_save, safe_torch_load


def small_resnet(norm="bn", width=0.5):
    return build_model("resnet8", num_classes=10, in_channels=1, norm=norm, width=width)


def test_kels_masks_are_top_left_blocks():
    model = small_resnet(width=0.3125)  # widths 5, 10, 20: odd channel counts exercise the ceiling
    masks = split_masks(model, "kels", 0.5)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert set(masks) == {f"{n}.weight" for n in layers} | {"fc.bias"}
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
    stem = masks["stem.0.weight"]  # first conv keeps its single input channel
    assert stem.shape == (5, 1, 3, 3) and stem[:3].all() and not stem[3:].any()
    conv = masks["layer2.0.conv1.weight"]  # 10 × 5 → 5 × 3 kept
    assert conv.sum() == 5 * 3 * 9 and conv[:5, :3].all()
    fc = masks["fc.weight"]  # last linear keeps all 10 outputs and ⌈20/2⌉ inputs
    assert fc.sum() == 10 * 10 and fc[:, :10].all() and not fc[:, 10:].any()
    assert masks["fc.bias"].all()
    assert [kels_size(c, 0.5) for c in (5, 10, 20, 1)] == [3, 5, 10, 1]


def test_wels_masks_keep_the_split_rate():
    model = small_resnet(width=1.0)
    masks = split_masks(model, "wels", 0.3, torch.Generator().manual_seed(0))
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs(kept / total - 0.3) < 0.01 and total > 70_000
    again = split_masks(model, "wels", 0.3, torch.Generator().manual_seed(0))
    assert all(torch.equal(masks[k], again[k]) for k in masks)


def test_bad_splits_are_one_line_errors():
    model = small_resnet()
    with pytest.raises(LeannetError, match="valid splits: kels, wels"):
        split_masks(model, "filter")
    with pytest.raises(LeannetError, match=r"rate must be in \(0, 1\]"):
        split_masks(model, "kels", 0.0)
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.LazyLinear(2))
    depthwise(torch.zeros(1, 3, 8, 8))
    with pytest.raises(LeannetError, match="grouped/depthwise conv '1'.*split=wels"):
        split_masks(depthwise, "kels")
    assert split_masks(depthwise, "wels")["1.weight"].shape == (8, 1, 3, 3)
    with pytest.raises(LeannetError, match="not a top-left block"):
        slim(model, split_masks(model, "wels"))


@pytest.mark.parametrize("mode", ["kels", "wels"])
def test_reinitialize_changes_exactly_the_reset_part(mode):
    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = split_masks(model, mode, 0.5, torch.Generator().manual_seed(1))
    reinitialize(model, masks, generator=torch.Generator().manual_seed(2))
    after = model.state_dict()
    for name, old in before.items():
        new = after[name]
        if name in masks:
            mask = masks[name]
            assert torch.equal(new[mask], old[mask]), name
            assert (new[~mask] != old[~mask]).all(), name
        else:  # BatchNorm parameters and statistics are never reset
            assert torch.equal(new, old), name


def test_reinit_scale_matches_pytorch_default():
    layer = nn.Conv2d(64, 64, 3)
    masks = {"weight": torch.zeros(64, 64, 3, 3, dtype=torch.bool)}
    reinitialize(layer, masks, generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(64 * 9)  # kaiming_uniform(a=√5) = U(±1/√fan_in)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound


@pytest.mark.parametrize("norm", ["bn", "rbn"])
def test_slim_equals_dense_when_reset_part_is_zero(norm):
    import leannet.norm  # noqa: F401  (registers rbn)

    torch.manual_seed(0)
    model = small_resnet(norm=norm, width=0.3125).double()
    for module in model.modules():  # non-trivial norm statistics and calibration parameters
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor.ndim == 1 and not name.startswith("ke_"):
                tensor.data.uniform_(0.5, 1.5)
    masks = split_masks(model, "kels", 0.5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in masks:
                param.mul_(masks[name])
    small = slim(model, masks)
    assert type(small) is type(model)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    model.eval(), small.eval()
    torch.testing.assert_close(small(x), model(x), rtol=1e-10, atol=1e-10)
    model.train(), small.train()  # batch statistics too: each channel is normalised on its own
    torch.testing.assert_close(small(x), model(x), rtol=1e-10, atol=1e-10)
    assert small.layer3[0].conv1.out_channels == 10 and small.fc.in_features == 10


def test_slim_is_the_narrower_leannet_model_and_trains():
    model = small_resnet(width=1.0)
    attach_masks(model, split_masks(model, "kels", 0.5))
    small = slim(model)
    reference = build_model("resnet8", num_classes=10, in_channels=1, width=0.5)
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in small.state_dict().items()} == shapes
    reference.load_state_dict(small.state_dict())
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(small(x), y)
    loss.backward()
    assert all(p.grad is not None for p in small.parameters())


def test_masks_survive_save_and_load(tmp_path):
    model = small_resnet()
    masks = split_masks(model, "wels", 0.5, torch.Generator().manual_seed(3))
    attach_masks(model, masks)
    atomic_torch_save(model.state_dict(), tmp_path / "model.pt")
    fresh = small_resnet()
    attach_masks(fresh, split_masks(fresh, "kels", 0.5))  # different masks, overwritten by the load
    fresh.load_state_dict(safe_torch_load(tmp_path / "model.pt"))
    loaded = get_masks(fresh)
    assert loaded.keys() == masks.keys()
    assert all(torch.equal(loaded[k], masks[k]) for k in masks)


def test_macs_of_resnet18_slim_match_the_paper():
    dense = build_model("tv:resnet18", num_classes=1000)
    small = slim(dense, split_masks(dense, "kels", 0.5))
    macs, slim_macs = count_macs(dense, (3, 224, 224)), count_macs(small, (3, 224, 224))
    assert macs == pytest.approx(1.814e9, rel=1e-3)  # 3.63 GOps = 2 × MACs
    assert 1 - slim_macs / macs == pytest.approx(0.733, abs=0.002)  # paper: 3.632 → 0.968 GOps, −73.3 %
