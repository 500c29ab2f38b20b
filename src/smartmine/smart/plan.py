"""The triplet plan of one smart-mining epoch: a shuffled mix of mined and random triplets.

[SM] trains each epoch on batches that mix a fraction ``p`` of mined triplets with ``1 − p`` random ones
(ALGORITHMS.md §3 step 4, default p = 0.5). A random triplet is a uniformly random anchor among the points that have
at least one positive, a uniformly random positive of its class (not itself) and a uniformly random negative of any
other class. When fewer mined triplets exist than requested, the shortfall is filled with random triplets and reported
through :attr:`TripletPlan.num_mined_requested`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from smartmine._validation import ArrayLike, check_labels, check_positive_int
from smartmine.smart.selection import SelectionResult, class_layout, outside_block


class TripletBatch(NamedTuple):
    """One training step's slice of a plan: ``(a, p, n, is_mined)``, each ``(B,)`` (int64 dataset indices / bool)."""

    a: np.ndarray
    p: np.ndarray
    n: np.ndarray
    is_mined: np.ndarray

    def to_batch(self) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The distinct images of this step and its triplets as rows of their embedding batch (see
        :meth:`TripletPlan.to_batch`)."""
        return _distinct_rows(self.a, self.p, self.n)


def _distinct_rows(
    a: np.ndarray, p: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Sorted distinct dataset indices of ``a, p, n`` (each ``(T,)``) and the ``(T,)`` row of each entry among them."""
    indices, inverse = np.unique(np.concatenate([a, p, n]), return_inverse=True)
    rows = torch.from_numpy(inverse.astype(np.int64).reshape(-1)).view(3, -1)
    return indices, (rows[0].clone(), rows[1].clone(), rows[2].clone())


@dataclass(frozen=True)
class TripletPlan:
    """Triplets to train one epoch on, in training order.

    Attributes:
        a, p, n: ``(T,)`` int64 dataset indices of anchors, positives, negatives.
        is_mined: ``(T,)`` bool, True for triplets from Algorithm 1, False for random ones.
        num_mined_requested: mined triplets the plan asked for (``round(p · T)``); ``None`` for slices.
    """

    a: np.ndarray
    p: np.ndarray
    n: np.ndarray
    is_mined: np.ndarray
    num_mined_requested: int | None = None

    def __post_init__(self) -> None:
        lengths = {x.shape for x in (self.a, self.p, self.n, self.is_mined)}
        if len(lengths) != 1 or self.a.ndim != 1:
            raise ValueError(f"TripletPlan: a, p, n, is_mined must be 1-D of equal length, got shapes {lengths}")

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @property
    def num_mined(self) -> int:
        """Number of mined triplets in the plan."""
        return int(np.count_nonzero(self.is_mined))

    @property
    def num_random(self) -> int:
        """Number of random triplets in the plan."""
        return len(self) - self.num_mined

    @property
    def mined_shortfall(self) -> int:
        """How many requested mined triplets were replaced by random ones (0 for slices)."""
        if self.num_mined_requested is None:
            return 0
        return max(0, self.num_mined_requested - self.num_mined)

    def _take(self, sel: slice | np.ndarray) -> TripletPlan:
        return TripletPlan(self.a[sel], self.p[sel], self.n[sel], self.is_mined[sel])

    def shard(self, rank: int, world_size: int) -> TripletPlan:
        """The part of the plan that process ``rank`` of ``world_size`` trains on.

        Shards are disjoint and of equal size ``len(self) // world_size`` (strided, so each keeps the mined/random
        mix); the last ``len(self) % world_size`` triplets are dropped so that every rank runs the same number of
        steps. Every rank must hold the same plan (same embeddings, κ and seed).
        """
        world_size = check_positive_int(world_size, "world_size")
        rank = check_positive_int(rank, "rank", minimum=0)
        if rank >= world_size:
            raise ValueError(f"rank: expected a value in [0, {world_size}), got {rank}")
        usable = len(self) - len(self) % world_size
        return self._take(slice(rank, usable, world_size))

    def batches(self, triplets_per_batch: int, drop_last: bool = False) -> Iterator[TripletBatch]:
        """Consecutive :class:`TripletBatch` slices of ``triplets_per_batch`` triplets (the last one shorter unless
        ``drop_last``), in plan order."""
        size = check_positive_int(triplets_per_batch, "triplets_per_batch")
        stop = len(self) - len(self) % size if drop_last else len(self)
        for start in range(0, stop, size):
            sl = slice(start, min(start + size, stop))
            yield TripletBatch(self.a[sl], self.p[sl], self.n[sl], self.is_mined[sl])

    def num_batches(self, triplets_per_batch: int, drop_last: bool = False) -> int:
        """Number of slices :meth:`batches` yields."""
        size = check_positive_int(triplets_per_batch, "triplets_per_batch")
        return len(self) // size if drop_last else -(-len(self) // size)

    def to_batch(self) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The distinct images these triplets need and the triplets as row indices into them (for a whole plan or a
        small slice of one).

        Returns:
            ``(indices, (a_rows, p_rows, n_rows))``: ``indices`` (U,) sorted distinct dataset indices to load and
            embed; the three ``torch.long`` tensors index rows of that ``(U, D)`` embedding batch, ready for a loss
            called as ``loss(embeddings, labels, triplets)``.
        """
        return _distinct_rows(self.a, self.p, self.n)


def random_triplets(labels: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``count`` uniformly random triplets: anchor among points with a positive, random positive, random negative.

    Args:
        labels: ``(N,)`` integer labels.
        count: number of triplets (>= 0).
        rng: random source.

    Returns:
        ``(a, p, n)`` int64 arrays of length ``count``.

    Raises:
        ValueError: when no class has two images (no anchor) or the set has a single class (no negative).
    """
    cls, cls_start, cls_size, members, rank_in_class = class_layout(np.asarray(labels))
    n_points = cls.size
    if count == 0:
        e = np.empty(0, np.int64)
        return e, e.copy(), e.copy()
    eligible = np.nonzero(cls_size[cls] >= 2)[0]
    if eligible.size == 0:
        raise ValueError("labels: no class has two or more images, so no anchor has a positive")
    if cls_size.size < 2:
        raise ValueError("labels: the whole set is one class, so no anchor has a negative")
    a = eligible[rng.integers(0, eligible.size, count)]
    ca = cls[a]
    # Positive: a uniform position in the anchor's class block other than the anchor's own.
    j = rng.integers(0, cls_size[ca] - 1)
    j = j + (j >= rank_in_class[a])
    p = members[cls_start[ca] + j]
    # Negative: a uniform position in `members` outside the anchor's class block.
    r = rng.integers(0, n_points - cls_size[ca])
    n = members[outside_block(r, cls_start[ca], cls_size[ca])]
    return a.astype(np.int64), p.astype(np.int64), n.astype(np.int64)


def build_epoch_plan(
    selection: SelectionResult | None,
    labels: ArrayLike,
    num_triplets: int,
    mined_fraction: float,
    rng: np.random.Generator,
) -> TripletPlan:
    """Mix ``round(mined_fraction · num_triplets)`` mined triplets with random ones and shuffle.

    Args:
        selection: the epoch's :func:`~smartmine.smart.selection.select_triplets` result, or ``None`` for an
            all-random plan (warm-up epochs).
        labels: ``(N,)`` integer labels.
        num_triplets: plan length ``T`` (>= 0).
        mined_fraction: ``p`` in [0, 1].
        rng: random source (subset of mined triplets, random triplets, shuffle).

    Returns:
        A shuffled :class:`TripletPlan` of length ``T``. If more mined triplets are available than requested a
        uniform subset is used; if fewer, all are used and the shortfall is filled with random triplets
        (``plan.mined_shortfall``).
    """
    lab = check_labels(labels).numpy()
    num_triplets = check_positive_int(num_triplets, "num_triplets", minimum=0)
    mined_fraction = float(mined_fraction)
    if not 0.0 <= mined_fraction <= 1.0:
        raise ValueError(f"mined_fraction: expected a value in [0, 1], got {mined_fraction}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    requested = int(round(mined_fraction * num_triplets))
    if selection is not None:
        if selection.num_valid_negatives.shape[0] != lab.shape[0]:
            raise ValueError(
                f"selection: was made for {selection.num_valid_negatives.shape[0]} points, labels has {lab.shape[0]}"
            )
        available = selection.num_triplets
        take = min(requested, available)
        chosen = np.sort(rng.choice(available, size=take, replace=False)) if take < available else np.arange(take)
        ma, mp, mn = selection.anchors[chosen], selection.positives[chosen], selection.negatives[chosen]
    else:
        ma = mp = mn = np.empty(0, np.int64)
    ra, rp, rn = random_triplets(lab, num_triplets - ma.size, rng)
    order = rng.permutation(num_triplets)
    return TripletPlan(
        a=np.concatenate([ma, ra])[order],
        p=np.concatenate([mp, rp])[order],
        n=np.concatenate([mn, rn])[order],
        is_mined=np.concatenate([np.ones(ma.size, bool), np.zeros(ra.size, bool)])[order],
        num_mined_requested=requested,
    )
