"""FANNG construction by batched insertion (``FanngIndex(construction="insert")``, ours).

The vertices are inserted in a seeded random order, the start vertex first, in batches that double in size up to
``max_batch_fraction`` of the points (the prefix-doubling schedule of parallel incremental graph builders). Every vertex
of a batch, in parallel against the graph as it was before the batch:

1. searches it for itself: best-first beam search from the start vertex keeping the ``width`` nearest vertices found
   (the candidates; early in the build, when the graph is small, they include far vertices, which gives the graph its
   long edges);
2. keeps as out-edges the candidates that FANNG's occlusion rule lets through (shortest first; ``u→v`` occludes
   ``u→w`` iff ``D(u,v) < D(u,w)`` and ``D(v,w) < D(u,w)``), at most ``max_degree``.

Then every new edge ``u→v`` offers ``v→u`` to ``v``, which merges the offers with its edges and re-prunes them by the
same rule. This is the construction of Vamana (DiskANN) and NSG with their pruning parameter at 1, where their rule
is FANNG's: every vertex's edges stay occlusion-free throughout. The caller then tests random pairs by downhill search
and repairs the failures with Traverse-Add until ``target_success``, and repairs greedy reachability from the start
vertex, as for the other constructions.

Searches read the graph only, and the commits of a batch are made in a fixed order, so the graph does not depend on
the thread count.
"""

from __future__ import annotations

import threading

import numpy as np

from smartmine.index import _insert_kernels as KI
from smartmine.index.knn_graph import run_rows

MAX_BATCH_FRACTION = 0.02  # largest batch, as a fraction of the vertices: larger batches see a staler graph


def insertion_order(nv: int, start: int, seed: int) -> np.ndarray:
    """A seeded random permutation of ``range(nv)`` with ``start`` moved to the front (int64)."""
    order = np.random.default_rng(seed).permutation(nv).astype(np.int64)
    at = int(np.flatnonzero(order == start)[0])
    order[[0, at]] = order[[at, 0]]
    return order


def offers_by_target(pts: np.ndarray, out_i: np.ndarray, out_d: np.ndarray, out_n: np.ndarray):
    """The reverse edges of a batch's new edges, grouped by the vertex they are offered to.

    Args:
        pts: ``(B,)`` the batch's vertices; ``out_i``/``out_d`` ``(B, W)`` their out-edges and lengths, ``out_n``
            ``(B,)`` how many.

    Returns:
        ``(rows, ptr, offer_i, offer_d)``: the receiving vertices ascending, and for ``rows[r]`` the offered targets
        ``offer_i[ptr[r]:ptr[r+1]]`` ascending by length (ties by id)."""
    mask = np.arange(out_i.shape[1])[None, :] < out_n[:, None]
    src = np.broadcast_to(pts[:, None], out_i.shape)[mask]
    dst = out_i[mask].astype(np.int64)
    length = out_d[mask]
    order = np.lexsort((src, length, dst))
    src, dst, length = src[order], dst[order], length[order]
    rows, first = np.unique(dst, return_index=True)
    ptr = np.append(first, dst.size).astype(np.int64)
    return rows, ptr, np.ascontiguousarray(src, dtype=np.int32), np.ascontiguousarray(length, dtype=np.float32)


def insert_graph(
    x: np.ndarray,
    start: int,
    max_degree: int,
    width: int,
    seed: int,
    threads: int,
    max_batch_fraction: float = MAX_BATCH_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The graph over the vertices ``x`` (``(V, D)`` float32, distinct rows) by batched insertion.

    Args:
        start: the start vertex (inserted first; every search starts there).
        max_degree: out-degree cap (``< 0``: ``width``, the most a search can offer).
        width: beam width of each insertion's search (the candidates per vertex).
        seed: seed of the insertion order.
        threads: threads for the searches and the re-pruning of a batch.

    Returns:
        ``(nbr (V, W) int32, lens (V, W) float32, deg (V,) int32, distance computations of the searches, batches)``,
        rows ascending by length, ``-1``/``inf`` padded."""
    nv = x.shape[0]
    keep = width if max_degree < 0 else max_degree
    nbr = np.full((nv, keep), -1, dtype=np.int32)
    lens = np.full((nv, keep), np.inf, dtype=np.float32)
    deg = np.zeros(nv, dtype=np.int32)
    order = insertion_order(nv, start, seed)
    max_batch = max(1, int(max_batch_fraction * nv))
    n_dist = n_batches = 0
    done_upto, size = 1, 1  # the start vertex is in; the next batch's size
    per_thread: dict[int, tuple[np.ndarray, ...]] = {}  # one per pool thread for the whole build: the mark array's
    # stamps are vertex ids, each searched once, so it never needs clearing

    def search_scratch() -> tuple[np.ndarray, ...]:
        key = threading.get_ident()
        if key not in per_thread:
            per_thread[key] = (np.full(nv, -1, np.int32), np.empty(width, np.int32), np.empty(width, np.float32),
                               np.empty(width, np.uint8))  # fmt: skip
        return per_thread[key]

    while done_upto < nv:
        pts = order[done_upto : done_upto + size]
        out_i = np.empty((pts.size, keep), dtype=np.int32)
        out_d = np.empty((pts.size, keep), dtype=np.float32)
        out_n = np.zeros(pts.size, dtype=np.int32)

        def search(lo: int, hi: int, s: tuple[np.ndarray, ...], pts=pts, out_i=out_i, out_d=out_d, out_n=out_n) -> int:
            return int(KI.insert_range(x, nbr, deg, pts, lo, hi, start, width, keep, out_i, out_d, out_n, *s))

        n_dist += run_rows(pts.size, threads, search_scratch, search)
        nbr[pts], lens[pts], deg[pts] = out_i, out_d, out_n
        _take_offers(x, nbr, lens, deg, offers_by_target(pts, out_i, out_d, out_n), keep, threads)
        done_upto += pts.size
        size = min(2 * size, max_batch)
        n_batches += 1
    return nbr, lens, deg, n_dist, n_batches


def _take_offers(x, nbr, lens, deg, offers, keep: int, threads: int) -> None:
    """Every vertex of ``offers`` (:func:`offers_by_target`) merges its offered edges into its row and re-prunes it
    (rows disjoint, so in parallel)."""
    rows, ptr, offer_i, offer_d = offers
    width = keep + int(np.diff(ptr).max(initial=0))

    def reprune(lo: int, hi: int, s: tuple[np.ndarray, np.ndarray]) -> int:
        KI.reprune_rows(x, nbr, lens, deg, rows, ptr, offer_i, offer_d, lo, hi, keep, *s)
        return 0

    run_rows(rows.size, threads, lambda: (np.empty(width, np.int32), np.empty(width, np.float32)), reprune)
