"""The interface every nearest-neighbour index implements.

An index is built once over ``N`` points and then answers k-NN queries. All backends return **squared** Euclidean
distances sorted ascending, as ``float32`` NumPy arrays, with ``int64`` indices; rows that have fewer than ``k``
results (possible only for approximate backends) are padded with index ``-1`` and distance ``inf``.
"""

from __future__ import annotations

import abc

import numpy as np
import torch

from smartmine._validation import ArrayLike, as_numpy, check_embeddings, check_positive_int


def to_numpy_f32(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Validate a 2-D finite float matrix (tensor or array) and return a C-contiguous float32 NumPy copy/view."""
    t = check_embeddings(x, name)
    return np.ascontiguousarray(as_numpy(t), dtype=np.float32)


class NeighbourIndex(abc.ABC):
    """Abstract k-NN index over a fixed set of points.

    Subclasses implement :meth:`_build` and :meth:`_search`; validation lives here so every backend rejects bad input
    with the same messages.
    """

    name: str = "index"
    """Short name of the backend (``mining.index``'s spelling: ``"exact"``, ``"fanng"``, ``"faiss"``), recorded in
    each mined epoch's metrics."""

    def __init__(self) -> None:
        self._n: int = 0
        self._dim: int = 0

    @property
    def size(self) -> int:
        """Number of indexed points (0 before :meth:`build`)."""
        return self._n

    @property
    def dim(self) -> int:
        """Dimension of the indexed points (0 before :meth:`build`)."""
        return self._dim

    def build(self, x: ArrayLike) -> NeighbourIndex:
        """Index the rows of ``x`` (shape ``(N, D)``, N >= 1, finite). Returns ``self``."""
        t = check_embeddings(x, "x", min_rows=1)
        self._n, self._dim = int(t.shape[0]), int(t.shape[1])
        self._build(t)
        return self

    def update(self, x: ArrayLike) -> NeighbourIndex:
        """Re-index after the points moved (a new epoch's embeddings of the same ``N`` points, row ``i`` the same
        point). Indexes that can reuse their previous structure (``FanngIndex``) warm-start from it, with a drift
        check; this default is a cold :meth:`build`. Returns ``self``."""
        return self.build(x)

    def warm_lists(self) -> np.ndarray | None:
        """``(N, K)`` int64 point ids (``-1`` padded) that a later :meth:`build_warm` over moved points can start from,
        e.g. saved with a checkpoint; ``None`` (this default) when the index keeps nothing reusable."""
        return None

    def build_warm(self, x: ArrayLike, lists: ArrayLike | None) -> NeighbourIndex:
        """Index the rows of ``x`` starting from ``lists``, the :meth:`warm_lists` of an index over the same ``N``
        points before they moved (row ``i`` the same point); ``None`` or an index that cannot reuse them (this
        default) builds cold. ``lists`` are checked either way: ``(N, K)`` integers in ``[-1, N)``. Returns
        ``self``."""
        check_warm_lists(lists, x)
        return self.build(x)

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed points of every query.

        Args:
            queries: ``(Q, D)`` finite float matrix.
            k: number of neighbours, ``1 <= k <= size``.

        Returns:
            ``(sq_distances, indices)``, both ``(Q, k)``, ascending by distance.
        """
        self._require_built()
        k = check_positive_int(k, "k")
        if k > self._n:
            raise ValueError(f"k: asked for {k} neighbours but the index holds only {self._n} points")
        q = check_embeddings(queries, "queries")
        if q.shape[1] != self._dim:
            raise ValueError(f"queries: dimension {q.shape[1]} does not match the index dimension {self._dim}")
        return self._search(q, k)

    def neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest neighbours of every indexed point, the point itself excluded.

        Returns ``(sq_distances, indices)`` of shape ``(N, k)``, ascending. Requires ``1 <= k < size``. Duplicates of a
        point (distance 0) are kept: only the point's own index is removed.
        """
        self._require_built()
        k = check_positive_int(k, "k")
        if k >= self._n:
            raise ValueError(
                f"k: asked for {k} neighbours of each point but the index holds only {self._n} points "
                f"(each point excludes itself, so k must be < {self._n})"
            )
        return self._neighbours(k)

    def _require_built(self) -> None:
        if self._n == 0:
            raise RuntimeError(f"{type(self).__name__}: call build(x) before searching")

    @abc.abstractmethod
    def _build(self, x: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abc.abstractmethod
    def _neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def check_warm_lists(lists: ArrayLike | None, x: ArrayLike) -> np.ndarray | None:
    """``lists`` as an ``(N, K)`` int64 array for :meth:`NeighbourIndex.build_warm` over ``x`` (``None`` passes)."""
    if lists is None:
        return None
    arr = as_numpy(lists)
    n = int(x.shape[0])
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lists: expected an (N, K) integer array of point ids, got shape {arr.shape} {arr.dtype}")
    if arr.shape[0] != n:
        raise ValueError(
            f"lists: {arr.shape[0]} rows, but x has {n} points; warm lists must come from an index over the same "
            "points (row i the same point)"
        )
    if arr.size and (arr.min() < -1 or arr.max() >= n):
        raise ValueError(f"lists: point ids must lie in [-1, {n}), got {arr.min()}..{arr.max()}")
    return arr.astype(np.int64, copy=False)


def drop_self(sq_dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from a ``(N, k+1)`` self-inclusive result and keep ``k`` columns.

    Row ``i`` of the input is the answer to querying point ``i``. If ``i`` is absent from its row (possible with
    duplicates or approximate search) the last column is dropped instead.
    """
    n = idx.shape[0]
    own = idx == np.arange(n, dtype=idx.dtype)[:, None]
    # For rows without their own index, drop the last (farthest) column.
    missing = ~own.any(axis=1)
    own[missing, -1] = True
    # Keep exactly one dropped entry per row (the first occurrence).
    first = np.argmax(own, axis=1)
    keep = np.ones_like(own)
    keep[np.arange(n), first] = False
    return sq_dist[keep].reshape(n, k), idx[keep].reshape(n, k)
