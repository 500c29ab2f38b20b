"""Some rows of a dataset as a dataset of their own: the training classes that stay after ``data.holdout_classes``
are set aside, and the held-out classes themselves."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from smartmine.data.base import MetricDataset


class RowSubset(MetricDataset):
    """Rows ``rows`` of ``base``, labels renumbered ``0 .. C'-1`` over the classes present (order kept).

    Items are ``(image, label, i)`` with ``i`` the row *in the subset*, like every :class:`MetricDataset`. Images
    are read through ``base`` with ``base``'s transform; setting :attr:`transform` sets it on ``base``.

    Args:
        base: the dataset to take rows from.
        rows: ``(N',)`` row indices into ``base`` (any order, no repeats needed).
        split: recorded for messages (e.g. ``"train"``, ``"holdout"``).
    """

    def __init__(self, base: MetricDataset, rows: np.ndarray, *, split: str) -> None:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(base)):
            raise ValueError(f"rows: indices must lie in [0, {len(base)}), got range [{rows.min()}, {rows.max()}]")
        self.base = base
        self.rows = rows
        super().__init__(base.labels[rows], base.class_names, base.transform, name=base.name, split=split)
        self.kind = base.kind
        images = getattr(base, "images", None)
        if images is not None:
            self.images = images[rows]  # the raw array, for the raw-pixel baseline and grayscale thumbnails

    @property
    def transform(self):  # type: ignore[override]
        return self.base.transform

    @transform.setter
    def transform(self, value) -> None:
        self.base.transform = value

    @property
    def paths(self) -> list[str] | None:
        paths = self.base.paths
        return None if paths is None else [paths[int(r)] for r in self.rows]

    def load_pil(self, index: int) -> Image.Image:
        return self.base.load_pil(int(self.rows[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        i = self._row(index)
        image, _, _ = self.base[int(self.rows[i])]  # the base's fast path for in-memory images
        return image, int(self.labels[i]), i
