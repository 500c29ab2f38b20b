"""Batch-level transforms for small in-memory images (glyphs, digits).

Per-image PIL transforms cost more than the forward pass of a small CNN on 32×32 inputs, so small datasets hand the
loader raw ``[0, 1]`` tensors (their fast path) and the trainer normalises — and, at training time, randomly rotates
and shifts — whole batches at once on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class SmallBatchTransform:
    """Normalise a batch ``(B, C, H, W)`` of ``[0, 1]`` images, optionally with a random affine per image.

    Args:
        augment: apply a random rotation in ``[-max_rotation, max_rotation]`` degrees and a random shift of up to
            ``max_shift`` of the side (per axis) to every image. Default ``False``.
        max_rotation: degrees. Default 8.
        max_shift: fraction of the image side. Default 0.06.
        mean, std: per-channel normalisation, ``(x - mean) / std``. Defaults map ``[0, 1]`` to ``[-1, 1]``.

    Random numbers come from torch's global CPU generator (which the trainer reseeds every epoch), so batches are
    augmented identically on CPU and GPU and across resumed runs. Areas shifted in are filled with 0 (background).
    """

    def __init__(
        self,
        *,
        augment: bool = False,
        max_rotation: float = 8.0,
        max_shift: float = 0.06,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
    ) -> None:
        if max_rotation < 0 or max_shift < 0:
            raise ValueError(f"max_rotation/max_shift: must be >= 0, got {max_rotation}, {max_shift}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std: must be positive, got {tuple(std)}")
        self.augment = augment
        self.max_rotation = float(max_rotation)
        self.max_shift = float(max_shift)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"x: expected a batch of shape (B, C, H, W), got {tuple(x.shape)}")
        x = x.float()
        if self.augment and x.shape[0] > 0:
            x = self._random_affine(x)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def _random_affine(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        angle = (torch.rand(b) * 2 - 1) * math.radians(self.max_rotation)
        # affine_grid works in normalised coordinates [-1, 1]: a shift of s·side is 2s there.
        shift = (torch.rand(b, 2) * 2 - 1) * (2 * self.max_shift)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        ).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def __repr__(self) -> str:
        return (
            f"SmallBatchTransform(augment={self.augment}, max_rotation={self.max_rotation}, "
            f"max_shift={self.max_shift}, mean={self.mean}, std={self.std})"
        )
