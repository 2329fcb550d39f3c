"""Pretrained tv:/timm: weights come only from local files: the torch hub cache or a given path."""

import pytest
import timm
import torch
import torchvision

from leannet.config import load_recipe
from leannet.errors import LeannetError
from leannet.models import build_model
from leannet.norm import RepresentativeBatchNorm2d
from leannet.train.run import build

TV_FILE = "mobilenet_v3_small-047dcff4.pth"  # the name torchvision downloads MobileNet_V3_Small DEFAULT as


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def tv_checkpoint(path, value=0.25):
    """A MobileNet-V3-small state dict with one recognisable tensor, saved at ``path``."""
    torch.manual_seed(1)
    state = torchvision.models.mobilenet_v3_small().state_dict()
    state["features.1.block.0.0.weight"].fill_(value)
    torch.save(state, path)
    return state


def test_recipe_with_torchvision_weights_loads_the_cached_file(hub, tmp_path):
    state = tv_checkpoint(hub / TV_FILE)
    config = load_recipe("fashion_mnist", [f"out_dir={tmp_path}", "data.name=digits", "data.val_size=100",
                                           "model.name=tv:mobilenet_v3_small", "model.args.weights=DEFAULT"])
    model = build(config).method.model
    assert torch.equal(model.features[1].block[0][0].weight, state["features.1.block.0.0.weight"])
    # 1-channel stem: the RGB filters summed, so a grey image gives what (x, x, x) gave
    assert torch.allclose(model.features[0][0].weight, state["features.0.0.weight"].sum(1, keepdim=True))
    assert model.classifier[3].out_features == 10  # the 1000-class head is not loaded


def test_weights_by_path_and_by_member_name(hub, tmp_path):
    state = tv_checkpoint(tmp_path / "mine.pth", value=0.5)
    model = build_model("tv:mobilenet_v3_small", 10, weights=str(tmp_path / "mine.pth"))
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])  # 3 channels: as saved
    tv_checkpoint(hub / TV_FILE)
    named = build_model("tv:mobilenet_v3_small", 10, weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    assert named.features[1].block[0][0].weight.unique().tolist() == [0.25]


def test_missing_foreign_and_corrupt_files_are_one_line(hub, tmp_path):
    with pytest.raises(LeannetError, match=f"expected {hub / TV_FILE}; download https://download.pytorch.org"):
        build_model("tv:mobilenet_v3_small", 10, weights="DEFAULT")
    torch.save(torchvision.models.resnet18().state_dict(), hub / TV_FILE)
    with pytest.raises(LeannetError, match="does not hold tv:mobilenet_v3_small's weights"):
        build_model("tv:mobilenet_v3_small", 10, weights="DEFAULT")
    (hub / TV_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(LeannetError, match=f"cannot read pretrained weights {hub / TV_FILE}") as info:
        build_model("tv:mobilenet_v3_small", 10, weights="DEFAULT")
    assert "\n" not in str(info.value)
    with pytest.raises(LeannetError, match="model.args.weights file not found"):
        build_model("tv:mobilenet_v3_small", 10, weights=str(tmp_path / "none.pth"))


def test_timm_pretrained_from_the_cache_and_rbn_keeps_the_output(hub):
    torch.manual_seed(2)
    source = timm.create_model("test_resnet")
    torch.save(source.state_dict(), hub / "test_resnet.r160_in1k.pth")
    model = build_model("timm:test_resnet", 10, pretrained=True).eval()
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.get_classifier().out_features == 10
    rbn = build_model("timm:test_resnet", 10, pretrained=True, norm="rbn").eval()
    assert any(isinstance(m, RepresentativeBatchNorm2d) for m in rbn.modules())
    features = torch.randn(2, 3, 32, 32)
    source.eval()
    # keep_output (docs/norm.md): the converted pretrained backbone computes what the BN one did
    assert torch.allclose(rbn.forward_features(features), source.forward_features(features), atol=1e-5)
    with pytest.raises(LeannetError, match="timm:test_vit not found: expected"):
        build_model("timm:test_vit", 10, pretrained=True)
