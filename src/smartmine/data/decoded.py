"""Photos decoded once: ``data.decode_once``.

Decoding and resizing a JPEG per image per epoch costs a few milliseconds of CPU each; on a GPU that keeps a small
backbone busy for a fraction of that, the loader becomes the bottleneck. :class:`DecodedImages` decodes every image
of a dataset once (short side resized to ``side``, centre-cropped to a ``side × side`` square, ``uint8``) and
:class:`PhotoBatchTransform` then crops, flips and normalises whole batches on the training device.

Test-time batches are the per-image photo preset (resize the short side, centre crop), up to a one-pixel shift where
the two centre crops' offsets round differently. Training crops are
drawn like ``RandomResizedCrop`` but from the centre square rather than the whole image, and resampled bilinearly
without antialiasing (boxes are at most ``8/7`` of the crop when ``side = crop · 8/7``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from smartmine.data.base import MetricDataset
from smartmine.data.transforms import IMAGENET_MEAN, IMAGENET_STD

_ATTEMPTS = 10  # RandomResizedCrop's tries before it falls back to the central box


class _SquarePixels(Dataset):
    """``base``'s images as ``uint8`` tensors ``(3, side, side)``: short side resized to ``side``, centre crop."""

    def __init__(self, base: MetricDataset, side: int) -> None:
        import torchvision.transforms as T

        from smartmine.data.transforms import ToRGB

        self.base = base
        self.steps = T.Compose([ToRGB(), T.Resize(side), T.CenterCrop(side), T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.steps(self.base.load_pil(index))


def decode_all(base: MetricDataset, side: int, *, workers: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Every image of ``base`` as one ``uint8`` tensor ``(N, 3, side, side)`` (``workers`` decoding processes)."""
    out = torch.empty((len(base), 3, side, side), dtype=torch.uint8)
    # A generator of its own: a loader draws a base seed when iterated, which would shift torch's global stream.
    loader = DataLoader(
        _SquarePixels(base, side), batch_size=batch_size, num_workers=workers, generator=torch.Generator()
    )
    start = 0
    for batch in loader:
        out[start : start + batch.shape[0]] = batch
        start += batch.shape[0]
    return out


class DecodedImages(MetricDataset):
    """The images of ``base`` decoded once and held in memory (``N · 3 · side²`` bytes; 196 KB per image at 256).

    Items are ``(uint8 tensor (3, side, side), label, i)``; pair it with :class:`PhotoBatchTransform`. Labels, class
    names, split and sample info are ``base``'s.

    Args:
        base: a photo dataset (its own transform is not used).
        side: side of the stored squares, e.g. the photo preset's resize ``image_size · 8 / 7``.
        workers: processes that decode (default 0: this one).
        pixels: already decoded ``(N, 3, side, side)`` ``uint8`` images of ``base`` (shared by two views of a split).
    """

    def __init__(self, base: MetricDataset, side: int, *, workers: int = 0, pixels: torch.Tensor | None = None) -> None:
        if side < 1:
            raise ValueError(f"side: must be >= 1, got {side}")
        super().__init__(
            base.labels, base.class_names, None, name=base.name, split=base.split,
            sample_info=base.sample_info, remap=False,
        )  # fmt: skip
        self.base = base
        self.side = int(side)
        self.num_skipped = base.num_skipped
        self.skipped_files = list(base.skipped_files)
        if pixels is None:
            pixels = decode_all(base, self.side, workers=workers)
        if tuple(pixels.shape) != (len(base), 3, self.side, self.side) or pixels.dtype != torch.uint8:
            raise ValueError(
                f"pixels: expected uint8 of shape {(len(base), 3, self.side, self.side)}, "
                f"got {pixels.dtype} {tuple(pixels.shape)}"
            )
        self.pixels = pixels

    @property
    def paths(self) -> list[str] | None:
        return self.base.paths

    def load_pil(self, index: int):
        return self.base.load_pil(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        i = self._row(index)
        return self.pixels[i], int(self.labels[i]), i


class PhotoBatchTransform:
    """Crop, flip and normalise a batch ``(B, 3, S, S)`` of decoded photos (``uint8`` or ``[0, 1]`` floats).

    Args:
        crop: output side. Must be ``<= S``.
        augment: ``False`` (default): the central ``crop × crop`` pixels (the photo preset's test transform).
            ``True``: per image a random box of ``scale`` × the area and aspect ratio in ``ratio`` (log-uniform),
            resampled to ``crop × crop``, flipped left-right with probability 0.5 when ``hflip``.
        scale, ratio, hflip: as ``torchvision``'s ``RandomResizedCrop`` / ``RandomHorizontalFlip``. Defaults
            ``(0.08, 1.0)``, ``(3/4, 4/3)``, ``True``.
        mean, std: per-channel normalisation. Defaults: ImageNet's.

    Random numbers come from torch's global CPU generator (reseeded by the trainer every epoch), so a batch is
    augmented identically on CPU and GPU and in a resumed run.
    """

    def __init__(
        self,
        crop: int,
        *,
        augment: bool = False,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if crop < 1:
            raise ValueError(f"crop: must be >= 1, got {crop}")
        if not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"scale: expected 0 < low <= high <= 1, got {tuple(scale)}")
        if not (0.0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio: expected 0 < low <= high, got {tuple(ratio)}")
        self.crop = int(crop)
        self.augment = augment
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip = hflip
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected a batch of shape (B, 3, S, S), got {tuple(x.shape)}")
        height, width = int(x.shape[2]), int(x.shape[3])
        if self.crop > min(height, width):
            raise ValueError(f"crop: {self.crop} is larger than the images ({height} × {width})")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.augment and x.shape[0] > 0:
            x = self._random_resized_crop(x)
        else:  # CenterCrop's offsets
            top = int(round((height - self.crop) / 2.0))
            left = int(round((width - self.crop) / 2.0))
            x = x[:, :, top : top + self.crop, left : left + self.crop]
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def boxes(self, batch: int, height: int, width: int) -> torch.Tensor:
        """Random boxes ``(batch, 4)`` as ``(top, left, h, w)`` in pixels, drawn like ``RandomResizedCrop``: up to 10
        tries of area ∈ ``scale`` × H·W and log-uniform aspect ratio ∈ ``ratio``, else the largest central box whose
        ratio is clamped into ``ratio``."""
        area = height * width
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(batch, _ATTEMPTS))
        aspect = torch.exp(lo + (hi - lo) * torch.rand(batch, _ATTEMPTS))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
        first = torch.argmax(fits.to(torch.int64), dim=1)  # the first try that fits (0 if none: masked below)
        rows = torch.arange(batch)
        w, h, ok = w[rows, first], h[rows, first], fits.any(dim=1)
        # Fallback: the central box with the image's ratio clamped into ``ratio``.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fh, fw = height, int(round(height * self.ratio[1]))
        else:
            fw, fh = width, height
        w = torch.where(ok, w, torch.tensor(float(fw)))
        h = torch.where(ok, h, torch.tensor(float(fh)))
        u = torch.rand(batch, 2)
        top = torch.where(ok, torch.floor(u[:, 0] * (height - h + 1)), torch.tensor(float((height - fh) // 2)))
        left = torch.where(ok, torch.floor(u[:, 1] * (width - w + 1)), torch.tensor(float((width - fw) // 2)))
        return torch.stack([top, left, h, w], dim=1)

    def _random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        box = self.boxes(b, height, width)
        flip = (torch.rand(b) < 0.5) if self.hflip else torch.zeros(b, dtype=torch.bool)
        top, left, h, w = box.unbind(1)
        # affine_grid maps output coordinates in [-1, 1] to input ones (align_corners=False: ±1 are pixel edges).
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = (w / width) * torch.where(flip, -1.0, 1.0)
        theta[:, 0, 2] = (2 * left + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * top + h) / height - 1
        theta = theta.to(x.device)
        grid = F.affine_grid(theta, [b, 3, self.crop, self.crop], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def decoded_bytes(n_images: int, side: int) -> int:
    """Memory that :class:`DecodedImages` takes for ``n_images`` squares of ``side`` pixels."""
    return int(n_images) * 3 * int(side) ** 2


__all__ = ["DecodedImages", "PhotoBatchTransform", "decode_all", "decoded_bytes"]
