"""RowSubset: labels renumbered over the classes present, items read through the base, paths and transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartmine.data.base import ArrayDataset
from smartmine.data.subset import RowSubset


def base() -> ArrayDataset:
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    return ArrayDataset(images, [0, 0, 1, 2, 2, 2], ["a", "b", "c"], name="toy", split="train")


def test_rows_labels_and_items():
    ds = base()
    sub = RowSubset(ds, np.array([5, 0, 3]), split="train")
    # classes present: a (row 0) and c (rows 5, 3) -> renumbered a=0, c=1 in the base's order
    assert sub.class_names == ["a", "c"]
    assert sub.labels.tolist() == [1, 0, 1]
    assert len(sub) == 3 and sub.kind == "small"
    image, label, index = sub[0]
    assert (label, index) == (1, 0)
    assert torch.equal(image, ds[5][0])  # the base's image of row 5, through its fast path
    assert np.array_equal(sub.images, ds.images[[5, 0, 3]])
    assert np.array_equal(np.asarray(sub.load_pil(2)), ds.images[3])
    assert sub[-1][2] == 2
    with pytest.raises(IndexError, match="out of range"):
        sub[3]


def test_transform_is_the_bases():
    ds = base()
    sub = RowSubset(ds, np.array([1, 2]), split="holdout")
    sub.transform = lambda img: torch.zeros(1)
    assert ds.transform is sub.transform
    assert sub[0][0].tolist() == [0.0]


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"rows: indices must lie in \[0, 6\)"):
        RowSubset(base(), np.array([0, 6]), split="train")
