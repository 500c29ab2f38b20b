"""Augmentation presets: ``train`` / ``test`` for photos and for small grayscale images.

Photos (CUB, Cars, SOP, In-Shop, folders, CSV lists), as in both papers: resize the short side to 256, then a
random resized crop to 224 and a horizontal flip for training, a centre crop to 224 for testing; ImageNet mean and
standard deviation. Any image mode (greyscale, palette, RGBA, CMYK) is converted to RGB first, so every backbone
sees 3 channels.

Small grayscale arrays (glyphs, digits): tensor conversion and normalisation, with an optional light random affine
augmentation for training (off by default: the glyphs already contain rotated and shifted variants).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from smartmine.data.images import to_mode

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PRESETS: tuple[str, ...] = ("train", "test")
KINDS: tuple[str, ...] = ("photo", "small")


class ToRGB:
    """Convert any PIL image to RGB (transparent images are composited onto white)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return to_mode(img, "RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class ToGray:
    """Convert any PIL image to 8-bit grayscale ("L")."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return to_mode(img, "L")

    def __repr__(self) -> str:
        return "ToGray()"


def _check_size(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer number of pixels, got {value!r}")
    return value


def photo_transform(
    train: bool,
    *,
    resize: int = 256,
    crop: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Photo preset: PIL image (any mode) -> float tensor ``(3, crop, crop)``, normalised.

    ``train=True``: resize the short side to ``resize``, ``RandomResizedCrop(crop, scale)``, horizontal flip (if
    ``hflip``). ``train=False``: resize the short side to ``resize``, centre crop ``crop``. Defaults 256 / 224.
    """
    _check_size(resize, "resize")
    _check_size(crop, "crop")
    if crop > resize:
        raise ValueError(f"crop: {crop} is larger than resize={resize}")
    if not (0.0 < scale[0] <= scale[1] <= 1.0):
        raise ValueError(f"scale: expected 0 < low <= high <= 1, got {tuple(scale)}")
    steps: list = [ToRGB(), T.Resize(resize)]
    if train:
        steps.append(T.RandomResizedCrop(crop, scale=tuple(scale)))
        if hflip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps.append(T.CenterCrop(crop))
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


def small_transform(
    train: bool,
    *,
    augment: bool = False,
    max_rotation: float = 8.0,
    max_shift: float = 0.06,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
    size: int | None = None,
) -> T.Compose:
    """Small-grayscale preset: PIL image -> float tensor ``(1, H, W)``, ``(x - mean) / std`` (default: to [-1, 1]).

    With ``train=True`` and ``augment=True`` a random affine (rotation up to ``max_rotation`` degrees, shift up to
    ``max_shift`` of the side) is applied first. ``size`` resizes to a square of that side (default: unchanged).
    """
    steps: list = [ToGray()]
    if size is not None:
        steps.append(T.Resize((_check_size(size, "size"), size)))
    if train and augment:
        steps.append(T.RandomAffine(degrees=max_rotation, translate=(max_shift, max_shift)))
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


def get_transform(preset: str, kind: str = "photo", **options) -> T.Compose:
    """Build a preset by name: ``preset`` is ``"train"`` or ``"test"``, ``kind`` is ``"photo"`` or ``"small"``;
    ``options`` go to :func:`photo_transform` or :func:`small_transform`."""
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {PRESETS}, got {preset!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    build = photo_transform if kind == "photo" else small_transform
    return build(preset == "train", **options)


def denormalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """Undo ``Normalize`` for display: ``x * std + mean`` on a ``(C, H, W)`` or ``(N, C, H, W)`` tensor."""
    shape = (-1, 1, 1)
    m = torch.as_tensor(list(mean), dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(list(std), dtype=x.dtype, device=x.device).view(shape)
    return x * s + m
