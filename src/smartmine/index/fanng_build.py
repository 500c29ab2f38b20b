"""Parallel FANNG construction from k-NN candidate lists (``FanngIndex(construction="nn_descent")``, ours).

The paper builds the graph by sequential Traverse-Add on random pairs. Here each vertex's out-edges are chosen from
candidates in parallel, with FANNG's own edge rule:

1. **Candidates**: the vertex's approximate k nearest neighbours (:func:`smartmine.index.knn_graph.nn_descent`, or
   last epoch's lists for a warm start).
2. **Occlusion pruning** per vertex, in parallel: candidates in ascending length, each kept unless a kept shorter edge
   occludes it (``u→v`` occludes ``u→w`` iff ``D(u,v) < D(u,w)`` and ``D(v,w) < D(u,w)``), at most ``max_degree``.
   This is the rule every FANNG vertex obeys; the same pruning is HNSW's neighbour heuristic and NSG's MRNG rule.
3. **Reverse edges**: every kept edge ``u→v`` offers ``v→u`` to ``v``; each vertex re-prunes its edges plus these
   offers (shortest first, at most ``2 * max_degree`` offers), so that a vertex is reachable from its neighbours.
4. The caller (:class:`~smartmine.index.fanng.FanngIndex`) then runs Traverse-Add on random pairs until the downhill
   success rate reaches ``target_success`` (:func:`grow_random_pairs`: the downhill tests of a batch of pairs in
   parallel against one snapshot of the graph, the repairs of the failed ones in order), caps the degree and repairs
   greedy reachability from the start vertex, both with the paper's Traverse-Add, so the graph's guarantees are
   FANNG's.

Steps 2 and 3 write only the row of the vertex they prune and read the others' candidates, so the graph does not
depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from smartmine._threads import run_chunks
from smartmine.index import _fanng_kernels as K
from smartmine.index.knn_graph import run_rows

PAIR_BATCH = 4096  # random pairs tested in parallel against one snapshot of the graph


def dense_to_csr(nbr: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr int64, indices int32)`` of the dense table's first ``deg[v]`` entries of each row."""
    indptr = np.zeros(nbr.shape[0] + 1, dtype=np.int64)
    np.cumsum(deg, out=indptr[1:])
    mask = np.arange(nbr.shape[1])[None, :] < deg[:, None]
    return indptr, np.ascontiguousarray(nbr[mask], dtype=np.int32)


def prune_candidates(
    x: np.ndarray,
    cand_i: np.ndarray,
    cand_d: np.ndarray,
    max_keep: int,
    threads: int,
    indptr: np.ndarray | None = None,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occlusion-pruned out-edges of every vertex from candidates ``cand_i`` / ``cand_d`` (``(V, C)``, ``-1`` / any
    padding) plus, when given, its current CSR edges ``indptr``/``indices``.

    Returns the dense ``(nbr (V, W) int32, lens (V, W) float32, deg (V,) int32)`` of
    :func:`~smartmine.index._fanng_kernels.prune_range`, rows ascending, at most ``max_keep`` edges (``< 0``: all)."""
    nv = x.shape[0]
    if indptr is None or indices is None:
        indptr = np.zeros(nv + 1, dtype=np.int64)
        indices = np.empty(0, dtype=np.int32)
    cand_i = np.ascontiguousarray(cand_i, dtype=np.int64)
    cand_d = np.ascontiguousarray(cand_d, dtype=np.float32)
    width = cand_i.shape[1] + int(np.diff(indptr).max(initial=0))
    keep = width if max_keep < 0 else min(width, max_keep)
    nbr = np.full((nv, max(keep, 1)), -1, dtype=np.int32)
    lens = np.full((nv, max(keep, 1)), np.inf, dtype=np.float32)
    deg = np.zeros(nv, dtype=np.int32)

    def scratch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.full(nv, -1, dtype=np.int32), np.empty(width, np.int32), np.empty(width, np.float32)

    def work(lo: int, hi: int, s: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
        K.prune_range(x, indptr, indices, cand_i[lo:hi], cand_d[lo:hi], lo, hi, keep, nbr, lens, deg, *s)
        return 0

    run_rows(nv, threads, scratch, work)
    return nbr, lens, deg


def reverse_candidates(nbr: np.ndarray, lens: np.ndarray, deg: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For every vertex ``v``, the sources ``u`` of edges ``u→v`` (shortest first, at most ``width``; ties by source
    id) as ``(ids (V, width) int64, lengths (V, width) float32)``, ``-1`` / ``inf`` padded."""
    nv = nbr.shape[0]
    mask = np.arange(nbr.shape[1])[None, :] < deg[:, None]
    src = np.broadcast_to(np.arange(nv)[:, None], nbr.shape)[mask]
    dst = nbr[mask].astype(np.int64)
    length = lens[mask]
    order = np.lexsort((src, length, dst))
    src, dst, length = src[order], dst[order], length[order]
    first = np.searchsorted(dst, np.arange(nv))
    rank = np.arange(dst.size) - first[dst]
    ok = rank < width
    out_i = np.full((nv, width), -1, dtype=np.int64)
    out_d = np.full((nv, width), np.inf, dtype=np.float32)
    out_i[dst[ok], rank[ok]] = src[ok]
    out_d[dst[ok], rank[ok]] = length[ok]
    return out_i, out_d


def knn_prune_graph(
    x: np.ndarray,
    cand_i: np.ndarray,
    cand_d: np.ndarray,
    max_degree: int,
    threads: int,
    prev_edges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 2–3 of the module docstring: forward occlusion pruning of the candidate lists, then re-pruning with the
    reverse edges. ``max_degree < 0``: no cap. ``prev_edges`` (warm start): ``(V, W)`` vertex ids, ``-1`` padded, the
    previous graph's out-edges of each vertex, offered as further candidates (their long Traverse-Add edges keep the
    graph navigable, so few random pairs fail afterwards). Returns dense ``(nbr, lens, deg)``."""
    indptr = indices = None
    if prev_edges is not None:
        indptr, indices = dense_to_csr(np.sort(prev_edges, axis=1)[:, ::-1], (prev_edges >= 0).sum(axis=1))
    nbr, lens, deg = prune_candidates(x, cand_i, cand_d, max_degree, threads, indptr, indices)
    cap = max_degree if max_degree >= 0 else nbr.shape[1]
    rev_i, rev_d = reverse_candidates(nbr, lens, deg, 2 * cap)
    indptr, indices = dense_to_csr(nbr, deg)
    return prune_candidates(x, rev_i, rev_d, max_degree, threads, indptr, indices)


def grow_random_pairs(
    x: np.ndarray,
    nbr: np.ndarray,
    lens: np.ndarray,
    deg: np.ndarray,
    target_success: float,
    window: int,
    seed: int,
    max_pairs: int,
    max_ops: int,
    threads: int,
    batch: int = PAIR_BATCH,
) -> tuple[np.ndarray, np.ndarray, int, float, int, int]:
    """Step 4's random pairs in batches: the downhill tests of a batch of ``batch`` pairs run in parallel against the
    graph as it was at the start of the batch (read-only), then the failed pairs get Traverse-Add in order, one
    thread. Same stopping rule as :func:`~smartmine.index._fanng_kernels.grow_graph` (``target_success`` of the last
    ``window`` pairs), and the same return value ``(nbr, lens, pairs, success rate, distance computations, status)``.

    A pair is judged on the batch's snapshot: one that an earlier repair of the same batch fixed still counts as a
    failure (its Traverse-Add then finds the path and adds nothing), so the measured rate errs on the low side. The
    pairs come from ``numpy.random.default_rng(seed)`` and the tests do not depend on the thread count, so neither
    does the graph; it does differ from the sequential kernel's (other pairs, judged a batch late)."""
    n = x.shape[0]
    if n < 2:
        return nbr, lens, 0, 1.0, 0, K.STATUS_OK
    rng = np.random.default_rng(seed)
    hist = np.zeros(window, dtype=np.uint8)
    counters = np.zeros(3, dtype=np.int64)
    need = int(np.ceil(target_success * window - 1e-9))
    status = K.STATUS_OK
    ok = np.empty(batch, dtype=np.uint8)
    nd = np.empty(batch, dtype=np.int64)
    while True:  # each batch ends with the target met (done), an error, or more pairs needed
        if counters[0] >= max_pairs:
            status = K.STATUS_MAX_PAIRS
            break
        b = int(min(batch, max_pairs - counters[0]))
        v1 = rng.integers(0, n, size=b, dtype=np.int32)
        v2 = rng.integers(0, n - 1, size=b, dtype=np.int32)
        v2 += v2 >= v1
        step = -(-b // (4 * threads))
        bounds = [(lo, min(b, lo + step)) for lo in range(0, b, step)]

        def test(lo: int, hi: int, nbr: np.ndarray = nbr, v1: np.ndarray = v1, v2: np.ndarray = v2) -> int:
            return int(K.downhill_range(x, nbr, deg, v1, v2, lo, hi, ok, nd))

        run_chunks(test, bounds, threads)
        nbr, lens, done, status = K.repair_failed_pairs(
            x, nbr, lens, deg, v1, v2, ok[:b], nd[:b], hist, counters, need, max_ops
        )
        if done or status != K.STATUS_OK:
            break
    rate = float(counters[1]) / min(max(int(counters[0]), 1), window)
    return nbr, lens, int(counters[0]), rate, int(counters[2]), int(status)
