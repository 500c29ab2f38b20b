"""Class-disjoint train/test splits, the convention of deep metric learning benchmarks.

The test classes are never seen in training: CUB-200-2011 uses classes 1-100 for training and 101-200 for testing,
Cars196 1-98 / 99-196, the shared ``cub100`` subset 0-49 / 50-99. All of these are "the first half of the sorted
class ids", which :func:`first_half_split` implements; :func:`seeded_half_split` is the glyphs' variant with a
seeded permutation instead of the sorted order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

CLASS_SPLITS: tuple[str, ...] = ("train", "test", "all")


def check_split(split: str, allowed: Sequence[str] = CLASS_SPLITS) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise ``ValueError`` naming the choices."""
    if split not in allowed:
        raise ValueError(f"split: expected one of {tuple(allowed)}, got {split!r}")
    return split


def first_half_split(
    class_ids: Sequence[Hashable], split: str, train_classes: Sequence[Hashable] | None = None
) -> list[Hashable]:
    """Return the classes of ``split`` among ``class_ids`` (sorted).

    Without ``train_classes``: the first ``ceil(C / 2)`` of the sorted ids are ``"train"``, the rest ``"test"``
    (``"all"`` returns every class). With ``train_classes``: those are the training classes and every other class is
    a test class; an id in ``train_classes`` that is not in ``class_ids`` raises ``ValueError``.
    """
    check_split(split)
    ordered = sorted(set(class_ids))
    if split == "all":
        return ordered
    if train_classes is None:
        n_train = (len(ordered) + 1) // 2
        return ordered[:n_train] if split == "train" else ordered[n_train:]
    wanted = set(train_classes)
    unknown = wanted - set(ordered)
    if unknown:
        shown = ", ".join(repr(u) for u in sorted(unknown, key=str)[:5])
        raise ValueError(f"train_classes: {len(unknown)} class(es) not found in the data: {shown}")
    return [c for c in ordered if (c in wanted) == (split == "train")]


def seeded_half_split(num_classes: int, split: str, seed: int) -> np.ndarray:
    """Class indices (sorted ``int64``) of ``split`` when ``num_classes`` classes are split half/half at random.

    A ``np.random.default_rng(seed)`` permutation of ``range(num_classes)``: its first ``num_classes // 2`` entries
    are the training classes, the others the test classes.
    """
    check_split(split)
    if split == "all":
        return np.arange(num_classes, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(num_classes)
    half = num_classes // 2
    chosen = perm[:half] if split == "train" else perm[half:]
    return np.sort(chosen).astype(np.int64)


def holdout_rows(labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """Boolean mask ``(N,)`` of the training rows whose class is held out (``data.holdout_classes``).

    ``classes`` classes are drawn with ``np.random.default_rng([seed, 7])`` among those with at least two images, so
    that every held-out class can be queried; at least two classes with two images must stay for training.

    Raises:
        ValueError: ``classes`` < 2, or too few classes with two images to hold that many out.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ids, counts = np.unique(labels, return_counts=True)
    eligible = ids[counts >= 2]
    if int(classes) != classes or classes < 2 or eligible.size - classes < 2:
        raise ValueError(
            f"holdout_classes: {classes} cannot be held out of {eligible.size} classes with two or more images "
            f"(at least 2 must be held out for retrieval and 2 must stay for training)"
        )
    chosen = np.random.default_rng([seed, 7]).choice(eligible, size=int(classes), replace=False)
    return np.isin(labels, chosen)
