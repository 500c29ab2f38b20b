"""A compact convolutional network for small images (32×32 glyphs, 8×8 digits upsampled, thumbnails).

Design: one ``conv3×3 → BatchNorm → ReLU`` per stage, 2×2 max-pooling between stages, global average pooling at the
end. With the default widths ``(16, 32, 64, 128)`` a 32×32 input is reduced to 4×4 before the last stage, whose
receptive field then spans the whole glyph, so averaging loses little shape information. The network has about 98 k
parameters and costs about 3.7 M multiply-adds per 32×32 image, so a few epochs on a few thousand images train in
well under two minutes on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv stages with batch norm and global average pooling; returns ``(B, widths[-1])`` features.

    Args:
        in_channels: channels of the input images (1 for grayscale, 3 for RGB). Default 1.
        widths: output channels of each stage (at least one stage). Default ``(16, 32, 64, 128)``.
        pool_stages: how many of the first stages are followed by 2×2 max-pooling; ``None`` (default) pools after
            every stage but the last. Use fewer for inputs smaller than 32×32 (8×8 digits: ``pool_stages=2``).

    Input: ``(B, in_channels, H, W)`` with ``H, W >= 2 ** pool_stages``; output: ``(B, widths[-1])``.
    """

    def __init__(
        self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128), pool_stages: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f"in_channels: expected a positive integer, got {in_channels!r}")
        widths = tuple(widths)
        if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
            raise ValueError(f"widths: expected a non-empty sequence of positive integers, got {widths!r}")
        if pool_stages is None:
            pool_stages = len(widths) - 1
        if not isinstance(pool_stages, int) or not 0 <= pool_stages <= len(widths):
            raise ValueError(f"pool_stages: expected an integer in [0, {len(widths)}], got {pool_stages!r}")
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            # No conv bias: the following batch norm has its own shift.
            layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if i < pool_stages:
                layers.append(nn.MaxPool2d(2))
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels
        self.feature_dim = widths[-1]
        self.min_size = 2**pool_stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x: expected shape (B, {self.in_channels}, H, W) for SmallCNN(in_channels={self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        if min(x.shape[2], x.shape[3]) < self.min_size:
            raise ValueError(f"x: spatial size {tuple(x.shape[2:])} is below the minimum {self.min_size} for SmallCNN")
        return self.pool(self.features(x)).flatten(1)
