"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images), classes 0-4 train, 5-9 test.

Kept as a tiny sanity dataset; it cannot show metric learning working (10 classes: an embedding trained on 0-4 is
no better than raw pixels on 5-9), which is why ``glyphs`` is the default.
"""

from __future__ import annotations

import numpy as np

from smartmine.data.base import ArrayDataset, Transform
from smartmine.data.splits import check_split


def load_digits_dataset(split: str = "train", transform: Transform | None = None) -> ArrayDataset:
    """Digits ``split`` (``"train"``: 0-4, ``"test"``: 5-9, ``"all"``) as uint8 images ``(N, 8, 8)`` scaled from the
    original 0-16 range to 0-255."""
    check_split(split)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    wanted = {"train": range(0, 5), "test": range(5, 10), "all": range(10)}[split]
    rows = np.flatnonzero(np.isin(labels, list(wanted)))
    return ArrayDataset(images[rows], labels[rows], [str(d) for d in range(10)], transform, name="digits", split=split)
