"""Backbone registry: names, options, output shapes, parameter counts, offline pretrained handling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smartmine.models import backbones
from smartmine.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    PretrainedWeightsUnavailable,
    available_backbones,
    build_backbone,
    register_backbone,
)

# Parameter counts published by torchvision for the ImageNet models (weights.meta["num_params"]), minus the
# removed 1000-way classifier (fc: feature_dim * 1000 weights + 1000 biases).
GOOGLENET_PARAMS = 6_624_904 - (1024 * 1000 + 1000)
RESNET50_PARAMS = 25_557_032 - (2048 * 1000 + 1000)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def googlenet() -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    return build_backbone("googlenet")


@pytest.fixture(scope="module")
def resnet50() -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    return build_backbone("resnet50")


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches, so that nothing pretrained is found (and nothing is downloaded)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_registry_lists_the_documented_names():
    names = available_backbones()
    for name in ("small_cnn", "googlenet", "resnet50", "efficientnet_lite0", "timm:<model_name>"):
        assert name in names


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown backbone 'googlnet'.*did you mean 'googlenet'"):
        build_backbone("googlnet")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"no option 'in_chanels'.*did you mean 'in_channels'"):
        build_backbone("small_cnn", in_chanels=1)


def test_register_backbone_adds_a_name_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(backbones, "BACKBONES", backbones.BACKBONES.copy())

    @register_backbone("tiny_linear")
    def _tiny(pretrained: bool = False, *, width: int = 5):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(width)), width, InputSpec(1, 4, (0.0,), (1.0,))

    module, dim = build_backbone("tiny_linear", width=7)
    assert dim == 7
    assert module(torch.zeros(2, 1, 4, 4)).shape == (2, 7)
    assert module.input_spec == InputSpec(1, 4, (0.0,), (1.0,))
    assert "tiny_linear" in available_backbones()
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny_linear")(_tiny)
    with pytest.raises(ValueError, match="without ':'"):
        register_backbone("timm:x")


@pytest.mark.parametrize("channels", [1, 3])
def test_small_cnn_forward_shape_and_parameter_count(channels):
    module, dim = build_backbone("small_cnn", in_channels=channels)
    assert dim == 128
    out = module(torch.randn(5, channels, 32, 32))
    assert out.shape == (5, 128)
    # Hand count: 3x3 convs without bias (9 * c_in * c_out) + BN weight and bias (2 * c_out) per stage.
    widths = [channels, 16, 32, 64, 128]
    expected = sum(9 * a * b + 2 * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert n_params(module) == expected
    assert module.input_spec.channels == channels and module.input_spec.size == 32


def test_small_cnn_options_and_bad_input():
    module, dim = build_backbone("small_cnn", in_channels=1, widths=[8, 12], pool_stages=1)
    assert dim == 12
    assert module(torch.randn(2, 1, 8, 8)).shape == (2, 12)
    with pytest.raises(ValueError, match=r"expected shape \(B, 1, H, W\)"):
        module(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="widths"):
        build_backbone("small_cnn", widths=[])
    with pytest.raises(ValueError, match="pretrained"):
        build_backbone("small_cnn", pretrained=True)


def test_googlenet_builds_without_download(googlenet):
    module, dim = googlenet
    assert dim == 1024
    assert n_params(module) == GOOGLENET_PARAMS
    assert isinstance(module.fc, nn.Identity) and module.aux1 is None and module.aux2 is None
    assert module.input_spec == InputSpec(3, 224, IMAGENET_MEAN, IMAGENET_STD)


def test_resnet50_builds_without_download(resnet50):
    module, dim = resnet50
    assert dim == 2048
    assert n_params(module) == RESNET50_PARAMS
    module.eval()
    with torch.no_grad():
        assert module(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


def test_grayscale_adapter_repeats_the_channel():
    module, dim = build_backbone("efficientnet_lite0", in_channels=1)
    module.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = module(x)
        inner = module[1](x.repeat(1, 3, 1, 1))
    assert out.shape == (2, dim)
    torch.testing.assert_close(out, inner)
    assert module.input_spec.channels == 1
    assert module.input_spec.mean == pytest.approx((0.5,))


def test_torchvision_pretrained_without_cache_raises_clearly(offline_caches):
    with pytest.raises(PretrainedWeightsUnavailable, match=r"resnet50-.*\.pth.*weights_path"):
        build_backbone("resnet50", pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailable, match="googlenet"):
        build_backbone("googlenet", pretrained=True)
    with pytest.raises(FileNotFoundError, match="weights_path"):
        build_backbone("resnet50", weights_path=offline_caches / "nope.pth")


def test_googlenet_pretrained_loads_from_the_torch_hub_cache(googlenet, offline_caches):
    source, _ = googlenet
    state = dict(source.state_dict())
    torch.manual_seed(1)
    state["fc.weight"] = torch.randn(1000, 1024)  # the classifier of the real file, dropped by the builder
    state["fc.bias"] = torch.randn(1000)
    state["aux1.fc2.bias"] = torch.zeros(1000)  # auxiliary heads are dropped too
    cache = offline_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "googlenet-1378be20.pth")
    module, _ = build_backbone("googlenet", pretrained=True)
    assert module.transform_input  # as torchvision does for these weights
    loaded = module.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_timm_backbone_and_pretrained_without_cache(offline_caches):
    module, dim = build_backbone("timm:resnet18")
    assert dim == 512
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert module.input_spec.channels == 3
    with pytest.raises(PretrainedWeightsUnavailable, match=r"timm:resnet18.*weights_path"):
        build_backbone("timm:resnet18", pretrained=True)
    with pytest.raises(ValueError, match="timm has no model"):
        build_backbone("timm:resnet_does_not_exist")
    with pytest.raises(ValueError, match="no option 'model_name'"):
        build_backbone("timm:resnet18", model_name="resnet34")


def _timm_reference_state(seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False).state_dict()  # with its 1000-way classifier


def _assert_backbone_matches(module: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    loaded = module.state_dict()
    assert set(loaded) == {k for k in reference if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key


def test_timm_pretrained_from_weights_path(tmp_path):
    reference = _timm_reference_state(seed=5)
    torch.save(reference, tmp_path / "test_resnet.pth")
    module, dim = build_backbone("timm:test_resnet", weights_path=tmp_path / "test_resnet.pth")
    assert dim == 96
    _assert_backbone_matches(module, reference)


def test_timm_pretrained_from_the_hugging_face_cache(offline_caches):
    # The hub cache layout: models--<org>--<name>/refs/main names a snapshot folder holding the files.
    safetensors = pytest.importorskip("safetensors.torch")
    reference = _timm_reference_state(seed=6)
    repo = offline_caches / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    safetensors.save_file({k: v.contiguous() for k, v in reference.items()}, str(snapshot / "model.safetensors"))
    module, _ = build_backbone("timm:test_resnet", pretrained=True)
    _assert_backbone_matches(module, reference)
