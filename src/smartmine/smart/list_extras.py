"""Widen every neighbour list with sampled same-class and other-class points (ours, issue 15).

A k-NN list only holds a point's nearest neighbours, so mining from it alone is biased twice: its positives are the
anchor's *nearest* same-class points (the far ones, which retrieval must also pull in, are never trained as mined
positives), and an anchor whose semi-hard bound lies past its list's last negative cannot be mined at all, so a
controller steering κ ends up choosing *which anchors* are mined (those with an unusually close positive) instead of
how hard their triplets are (docs/BENCHMARKS.md, "Session 9").

:func:`widen_lists` appends to each anchor's list

* up to ``extra_positives`` other points of its class (a uniformly placed window of the class; the whole class when it
  has at most ``extra_positives`` other points), and
* ``extra_negatives`` uniformly random points of other classes,

with their exact squared distances, removes duplicates and re-sorts each row. Selection and the thresholds ``t_a``
then run on the widened lists unchanged: a semi-hard slot draws its positive from (nearly) the whole class, and an
anchor whose listed negatives stop short of its bound takes the nearest sampled negative past it.
"""

from __future__ import annotations

import numba
import numpy as np

from smartmine._threads import run_chunks
from smartmine._validation import ArrayLike, as_numpy, check_positive_int
from smartmine.index.base import to_numpy_f32
from smartmine.smart.selection import class_layout, outside_block

_CHUNK_ROWS = 8_192  # anchors per work item (each holds an (N,) int64 scratch array)


def widen_lists(
    embeddings: ArrayLike,
    neighbour_indices: np.ndarray,
    neighbour_sq_distances: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    extra_positives: int = 0,
    extra_negatives: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Append sampled positives and negatives to each list (module docstring).

    Args:
        embeddings: ``(N, D)`` finite embeddings the lists were built from (NumPy or torch, any device).
        neighbour_indices: ``(N, k)`` int lists, ascending by distance, ``-1`` padding.
        neighbour_sq_distances: ``(N, k)`` float squared distances of those entries (padding ``inf``).
        labels: ``(N,)`` integer labels.
        rng: source of the samples (window starts and negatives).
        extra_positives: same-class points added per anchor, >= 0 (default 0).
        extra_negatives: other-class points added per anchor, >= 0 (default 0; drawn with replacement, duplicates
            removed).

    Returns:
        ``(indices, sq_distances)``: ``(N, k + extra_positives + extra_negatives)`` int64 / float64 NumPy lists,
        ascending, without duplicates or self entries, padded with ``-1`` / ``inf``. The inputs themselves are
        returned when both counts are 0.
    """
    extra_positives = check_positive_int(extra_positives, "extra_positives", minimum=0)
    extra_negatives = check_positive_int(extra_negatives, "extra_negatives", minimum=0)
    if extra_positives == 0 and extra_negatives == 0:
        return neighbour_indices, neighbour_sq_distances
    idx = as_numpy(neighbour_indices, np.int64)
    d2 = as_numpy(neighbour_sq_distances, np.float64)
    emb = to_numpy_f32(embeddings, "embeddings")
    lab = np.asarray(labels).reshape(-1)
    n = lab.shape[0]
    if emb.shape[0] != n or idx.shape[0] != n:
        raise ValueError(f"widen_lists: {emb.shape[0]} embeddings, {idx.shape[0]} lists and {n} labels must agree")
    cls, cls_start, cls_size, members, rank_in_class = class_layout(lab)
    extras = [_class_window(cls, cls_start, cls_size, members, rank_in_class, extra_positives, rng),
              _other_class_draws(cls, cls_start, cls_size, members, extra_negatives, rng)]  # fmt: skip
    extra = np.concatenate(extras, axis=1)  # (N, P + S), -1 where a class has fewer members
    out_i = np.empty((n, idx.shape[1] + extra.shape[1]), np.int64)
    out_d = np.empty(out_i.shape, np.float64)

    def work(lo: int, hi: int) -> None:
        # Each chunk stamps the points it has seen in its own (N,) array: duplicates cost O(1) per entry.
        _merge_kernel(lo, idx[lo:hi], d2[lo:hi], extra[lo:hi], emb, np.full(n, -1, np.int64),
                      out_i[lo:hi], out_d[lo:hi])  # fmt: skip

    bounds = [(lo, min(n, lo + _CHUNK_ROWS)) for lo in range(0, n, _CHUNK_ROWS)]
    run_chunks(work, bounds, numba.get_num_threads())
    return out_i, out_d


def _class_window(cls, cls_start, cls_size, members, rank_in_class, count: int, rng) -> np.ndarray:
    """``(N, count)`` other members of each point's class: a window of consecutive class positions (cyclic, the
    point itself skipped) starting at a uniform position; all of them, then ``-1``, when the class is small."""
    n = cls.size
    if count == 0:
        return np.empty((n, 0), np.int64)
    others = cls_size[cls] - 1  # (N,)
    start = (rng.random(n) * np.maximum(others, 1)).astype(np.int64)
    t = np.arange(count)[None, :]
    width = np.minimum(others, count)[:, None]
    j = (start[:, None] + t) % np.maximum(others, 1)[:, None]
    j = j + (j >= rank_in_class[:, None])  # skip the point's own position
    out = members[np.minimum(cls_start[cls][:, None] + j, n - 1)]
    return np.where(t < width, out, -1)


def _other_class_draws(cls, cls_start, cls_size, members, count: int, rng) -> np.ndarray:
    """``(N, count)`` uniformly random points of other classes (with replacement; ``-1`` for a single-class set)."""
    n = cls.size
    if count == 0:
        return np.empty((n, 0), np.int64)
    outside = n - cls_size[cls]  # (N,)
    r = (rng.random((n, count)) * np.maximum(outside, 1)[:, None]).astype(np.int64)
    r = outside_block(r, cls_start[cls][:, None], cls_size[cls][:, None])
    return np.where(outside[:, None] > 0, members[np.minimum(r, n - 1)], -1)


@numba.njit(cache=True, nogil=True)
def _merge_kernel(
    row0: int,  # dataset index of the chunk's first anchor
    idx: np.ndarray,  # (R, k) int64 lists, ascending, -1 padding
    d2: np.ndarray,  # (R, k) float64
    extra: np.ndarray,  # (R, E) int64 sampled points, -1 = none
    emb: np.ndarray,  # (N, D) float32
    seen: np.ndarray,  # (N,) int64 scratch, -1 initially: the last row that listed each point
    out_i: np.ndarray,  # (R, k + E) int64, filled here
    out_d: np.ndarray,  # (R, k + E) float64, filled here
) -> None:
    n_rows, k = idx.shape
    e = extra.shape[1]
    dim = emb.shape[1]
    ext_i = np.empty(e, np.int64)
    ext_d = np.empty(e, np.float64)
    lst_i = np.empty(k, np.int64)
    lst_d = np.empty(k, np.float64)
    for row in range(n_rows):
        a = row0 + row
        seen[a] = a  # never list the anchor itself
        kk = 0  # the list without padding, self entries or repeats (an approximate index may list a point twice)
        for j in range(k):
            v = idx[row, j]
            if v >= 0 and seen[v] != a:
                seen[v] = a
                lst_i[kk] = v
                lst_d[kk] = d2[row, j]
                kk += 1
        m = 0
        for j in range(e):
            v = extra[row, j]
            if v < 0 or seen[v] == a:
                continue
            seen[v] = a
            acc = 0.0
            for t in range(dim):
                diff = np.float64(emb[v, t]) - np.float64(emb[a, t])
                acc += diff * diff
            ext_i[m] = v
            ext_d[m] = acc
            m += 1
        order = np.argsort(ext_d[:m], kind="mergesort")
        # Merge the (ascending) list with the sorted extras; padding last.
        p = 0
        q = 0
        out = 0
        while p < kk or q < m:
            if p < kk and (q >= m or lst_d[p] <= ext_d[order[q]]):
                out_i[row, out] = lst_i[p]
                out_d[row, out] = lst_d[p]
                p += 1
            else:
                out_i[row, out] = ext_i[order[q]]
                out_d[row, out] = ext_d[order[q]]
                q += 1
            out += 1
        for t in range(out, out_i.shape[1]):
            out_i[row, t] = -1
            out_d[row, t] = np.inf
