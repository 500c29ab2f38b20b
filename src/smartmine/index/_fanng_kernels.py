"""Numba kernels of the FANNG graph (Harwood & Drummond, CVPR 2016): construction, refinement and search.

Everything here works on *vertices* ``0 .. V-1`` (the distinct vectors, rows of ``x``); :mod:`smartmine.index.fanng`
maps them back to the caller's points. Distances are squared Euclidean in float32: every rule of the method only
compares distances, and squaring is monotone.

Two adjacency layouts are used:

* construction: a dense ``(V, cap)`` table of targets ``nbr`` and squared lengths ``lens`` with the out-degree
  ``deg[v]``; each row is sorted ascending by length; ``cap`` doubles when a row fills up;
* search: CSR ``indptr`` (``V + 1``, int64) / ``indices`` (int32), each vertex's edges ascending by length.

Callers validate inputs; kernels trust shapes and finiteness and never recurse (Traverse-Add uses an explicit stack).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Status codes returned by the construction kernels.
STATUS_OK = 0
STATUS_MAX_PAIRS = 1  # the random-pair budget ran out before the success target was met
STATUS_MAX_OPS = 2  # a Traverse-Add cascade exceeded its operation budget (pathological input)


@njit(fastmath=True, cache=True)
def _sqdist(a: np.ndarray, b: np.ndarray) -> np.float32:
    """Squared Euclidean distance of two float32 vectors (fastmath lets LLVM vectorise the reduction).

    Not ``inline="always"``: numba-IR inlining stopped LLVM vectorising it (4x slower); LLVM inlines it anyway.
    """
    s = np.float32(0.0)
    for t in range(a.shape[0]):
        d = a[t] - b[t]
        s += d * d
    return s


# ----------------------------------------------------------------------------------------------------------------------
# Construction: naive downhill search and Traverse-Add on a dense, growable adjacency table.
# ----------------------------------------------------------------------------------------------------------------------


@njit(cache=True)
def downhill(x, nbr, deg, target, start):
    """Naive downhill search: from ``start``, move to the out-neighbour closest to ``x[target]`` while it is strictly
    closer than the current vertex. Returns ``(vertex where it stopped, distance computations used)``.

    Reaching ``target`` by index counts as success even when another vertex is at distance 0 from it.
    """
    cur = start
    t = x[target]
    dcur = _sqdist(x[cur], t)
    n_dist = 1
    while cur != target:
        best = -1
        dbest = dcur
        for e in range(deg[cur]):
            v = nbr[cur, e]
            if v == target:
                return target, n_dist
            dv = _sqdist(x[v], t)
            n_dist += 1
            if dv < dbest:
                dbest = dv
                best = v
        if best < 0:
            break
        cur = best
        dcur = dbest
    return cur, n_dist


@njit(cache=True)
def _grow(nbr, lens, cap):
    """Copy of the adjacency table with twice the capacity."""
    new_cap = cap * 2
    nbr2 = np.full((nbr.shape[0], new_cap), -1, dtype=np.int32)
    lens2 = np.full((nbr.shape[0], new_cap), np.inf, dtype=np.float32)
    nbr2[:, :cap] = nbr
    lens2[:, :cap] = lens
    return nbr2, lens2, new_cap


@njit(cache=True)
def _traverse_add(x, nbr, lens, deg, cap, v1, v2, stack, max_ops, removed):
    """Traverse-Add(v1, v2) with an explicit stack of pending ``(from, to)`` calls.

    For each call: ``u = downhill(to, from)``; if ``u != to``, add ``u -> to``, drop the longer edges of ``u`` that the
    new edge occludes, queue Traverse-Add(u, w) for every dropped ``u -> w`` (so w stays reachable from u), then queue
    Traverse-Add(to, u). The stack pops calls in the order the recursive definition would make them.

    Returns ``(nbr, lens, cap, stack, ops, n_dist, status)``; arrays may have been reallocated to grow.
    """
    sp = 0
    stack[0, 0] = v1
    stack[0, 1] = v2
    sp = 1
    ops = 0
    n_dist = 0
    while sp > 0:
        ops += 1
        if ops > max_ops:
            return nbr, lens, cap, stack, ops, n_dist, STATUS_MAX_OPS
        sp -= 1
        a = stack[sp, 0]
        b = stack[sp, 1]
        if a == b:
            continue
        u, nd = downhill(x, nbr, deg, b, a)
        n_dist += nd
        if u == b:
            continue
        dub = _sqdist(x[u], x[b])
        n_dist += 1
        # Rebuild u's row in place: edges no longer than the new one stay (they cannot be occluded by it), then the
        # new edge, then each longer edge unless u->b occludes it (D(b, w) < D(u, w); D(u, b) < D(u, w) holds).
        d_u = deg[u]
        n_removed = 0
        pos = 0
        while pos < d_u and lens[u, pos] <= dub:
            pos += 1
        # Scratch copy of the tail (edges longer than the new one).
        n_tail = d_u - pos
        keep_n = 0
        if removed.shape[0] < n_tail:
            removed = np.empty(2 * n_tail, dtype=np.int32)
        tail_nbr = nbr[u, pos:d_u].copy()
        tail_len = lens[u, pos:d_u].copy()
        for j in range(n_tail):
            w = tail_nbr[j]
            dbw = _sqdist(x[b], x[w])
            n_dist += 1
            if dbw < tail_len[j]:
                removed[n_removed] = w
                n_removed += 1
            else:
                tail_nbr[keep_n] = w
                tail_len[keep_n] = tail_len[j]
                keep_n += 1
        new_deg = pos + 1 + keep_n
        if new_deg > cap:
            nbr, lens, cap = _grow(nbr, lens, cap)
        nbr[u, pos] = b
        lens[u, pos] = dub
        for j in range(keep_n):
            nbr[u, pos + 1 + j] = tail_nbr[j]
            lens[u, pos + 1 + j] = tail_len[j]
        for j in range(new_deg, d_u):
            nbr[u, j] = -1
            lens[u, j] = np.inf
        deg[u] = new_deg
        # Queue: Traverse-Add(b, u) runs last, the removed edges first in their original order.
        need = sp + 1 + n_removed
        if need > stack.shape[0]:
            bigger = np.empty((2 * need, 2), dtype=np.int32)
            bigger[:sp] = stack[:sp]
            stack = bigger
        stack[sp, 0] = b
        stack[sp, 1] = u
        sp += 1
        for j in range(n_removed - 1, -1, -1):
            stack[sp, 0] = u
            stack[sp, 1] = removed[j]
            sp += 1
    return nbr, lens, cap, stack, ops, n_dist, STATUS_OK


@njit(cache=True)
def build_traverse_add(x, target_success, window, seed, max_pairs, max_ops, init_cap):
    """Grow a FANNG graph from an empty one by Traverse-Add on random vertex pairs.

    Each pair ``(v1, v2)`` (distinct, uniform) is first tested with downhill search from v1 towards v2; the test's
    outcome enters a sliding window of the last ``window`` pairs, and a failed pair is repaired by Traverse-Add.
    Construction stops when at least ``window`` pairs were tested and the window's success rate is at least
    ``target_success``, or after ``max_pairs`` pairs, or when one Traverse-Add cascade exceeds ``max_ops`` calls.

    Returns ``(nbr, lens, deg, n_pairs, success_rate, n_dist, status)``.
    """
    n = x.shape[0]
    cap = init_cap
    nbr = np.full((n, cap), -1, dtype=np.int32)
    lens = np.full((n, cap), np.inf, dtype=np.float32)
    deg = np.zeros(n, dtype=np.int32)
    if n < 2:
        return nbr, lens, deg, 0, 1.0, 0, STATUS_OK
    np.random.seed(seed)  # noqa: NPY002 - numba seeds its own generator this way
    hist = np.zeros(window, dtype=np.uint8)
    n_ok = 0
    n_pairs = 0
    n_dist = 0
    stack = np.empty((64, 2), dtype=np.int32)
    removed = np.empty(64, dtype=np.int32)
    need = int(np.ceil(target_success * window - 1e-9))
    status = STATUS_OK
    while True:
        if n_pairs >= window and n_ok >= need:
            break
        if n_pairs >= max_pairs:
            status = STATUS_MAX_PAIRS
            break
        v1 = np.random.randint(0, n)  # noqa: NPY002 - numba has no Generator API
        v2 = np.random.randint(0, n - 1)  # noqa: NPY002
        if v2 >= v1:
            v2 += 1
        u, nd = downhill(x, nbr, deg, v2, v1)
        n_dist += nd
        ok = 1 if u == v2 else 0
        slot = n_pairs % window
        if n_pairs >= window:
            n_ok -= hist[slot]
        hist[slot] = ok
        n_ok += ok
        n_pairs += 1
        if not ok:
            nbr, lens, cap, stack, _, nd, st = _traverse_add(x, nbr, lens, deg, cap, v1, v2, stack, max_ops, removed)
            n_dist += nd
            if st != STATUS_OK:
                status = st
                break
    rate = n_ok / min(max(n_pairs, 1), window)
    return nbr, lens, deg, n_pairs, rate, n_dist, status


@njit(cache=True)
def ensure_reachable(x, nbr, lens, deg, start, max_ops, max_rounds):
    """Traverse-Add(start, v) for every vertex v that downhill search from ``start`` does not reach, in passes over
    all vertices until a pass finds none (a repair can remove an edge an earlier vertex's path used), at most
    ``max_rounds`` passes.

    Returns ``(nbr, lens, n_repaired, n_unreached_after_last_pass, status)``.
    """
    n = x.shape[0]
    cap = nbr.shape[1]
    stack = np.empty((64, 2), dtype=np.int32)
    removed = np.empty(64, dtype=np.int32)
    n_rep = 0
    n_fail = 0
    for _ in range(max_rounds):
        n_fail = 0
        for v in range(n):
            u, _ = downhill(x, nbr, deg, v, start)
            if u != v:
                n_fail += 1
                nbr, lens, cap, stack, _, _, st = _traverse_add(
                    x, nbr, lens, deg, cap, start, v, stack, max_ops, removed
                )
                if st != STATUS_OK:
                    return nbr, lens, n_rep + n_fail, n_fail, st
        n_rep += n_fail
        if n_fail == 0:
            break
    return nbr, lens, n_rep, n_fail, STATUS_OK


@njit(cache=True)
def dense_to_csr(nbr, deg, max_degree):
    """CSR arrays from the dense table, keeping each vertex's ``max_degree`` shortest edges (all when < 0)."""
    n = nbr.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    for v in range(n):
        d = deg[v]
        if max_degree >= 0 and d > max_degree:
            d = max_degree
        indptr[v + 1] = indptr[v] + d
    indices = np.empty(indptr[n], dtype=np.int32)
    for v in range(n):
        s = indptr[v]
        for e in range(indptr[v + 1] - s):
            indices[s + e] = nbr[v, e]
    return indptr, indices


# ----------------------------------------------------------------------------------------------------------------------
# Backtrack search over the CSR graph.
# ----------------------------------------------------------------------------------------------------------------------


@njit(cache=True)
def _heap_push(hkey, hsrc, hrank, size, key, src, rank):
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if hkey[p] <= key:
            break
        hkey[i] = hkey[p]
        hsrc[i] = hsrc[p]
        hrank[i] = hrank[p]
        i = p
    hkey[i] = key
    hsrc[i] = src
    hrank[i] = rank
    return size + 1


@njit(cache=True)
def _heap_sift_down(hkey, hsrc, hrank, size):
    """Restore the heap after the root was overwritten."""
    key = hkey[0]
    src = hsrc[0]
    rank = hrank[0]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and hkey[c + 1] < hkey[c]:
            c += 1
        if hkey[c] >= key:
            break
        hkey[i] = hkey[c]
        hsrc[i] = hsrc[c]
        hrank[i] = hrank[c]
        i = c
    hkey[i] = key
    hsrc[i] = src
    hrank[i] = rank


@njit(cache=True)
def _topk_insert(out_d, out_i, k, d, idx):
    """Insert ``(d, idx)`` into the ascending top-k lists (equal distances keep insertion order)."""
    if d >= out_d[k - 1]:
        return
    j = k - 1
    while j > 0 and out_d[j - 1] > d:
        out_d[j] = out_d[j - 1]
        out_i[j] = out_i[j - 1]
        j -= 1
    out_d[j] = d
    out_i[j] = idx


@njit(cache=True)
def backtrack(x, indptr, indices, gptr, gmem, q, start, k, budget, visited, stamp, hkey, hsrc, hrank, out_d, out_i):
    """Backtrack search for query ``q`` from vertex ``start`` with at most ``budget`` distance computations.

    A priority queue holds edges keyed by the distance from ``q`` to the edge's source vertex; each source has one
    entry, pointing at its next unexplored (next-longer) edge. Popping an entry visits the edge's target if it is new
    (one distance computation; the target enters the queue with its shortest edge) and advances the source to its
    next edge. The best ``k`` visited vertices are kept, each expanded to its group of points (``gmem[gptr[v]:
    gptr[v+1]]``, the duplicates of vertex ``v``). ``visited[v] == stamp`` marks vertices seen by this query.
    Results go to ``out_d``/``out_i`` (pre-filled with inf/-1); returns the number of distance computations.
    """
    visited[start] = stamp
    d0 = _sqdist(x[start], q)
    n_dist = 1
    for m in range(gptr[start], gptr[start + 1]):
        _topk_insert(out_d, out_i, k, d0, gmem[m])
    size = 0
    if indptr[start + 1] > indptr[start]:
        size = _heap_push(hkey, hsrc, hrank, size, d0, start, 0)
    while size > 0 and n_dist < budget:
        src = hsrc[0]
        rank = hrank[0]
        e = indptr[src] + rank
        tgt = indices[e]
        # Advance the source to its next-longer edge (same key), or drop it when its edges are exhausted.
        if e + 1 < indptr[src + 1]:
            hrank[0] = rank + 1
        else:
            size -= 1
            if size > 0:
                hkey[0] = hkey[size]
                hsrc[0] = hsrc[size]
                hrank[0] = hrank[size]
                _heap_sift_down(hkey, hsrc, hrank, size)
        if visited[tgt] == stamp:
            continue
        visited[tgt] = stamp
        d = _sqdist(x[tgt], q)
        n_dist += 1
        if d < out_d[k - 1]:
            for m in range(gptr[tgt], gptr[tgt + 1]):
                _topk_insert(out_d, out_i, k, d, gmem[m])
        if indptr[tgt + 1] > indptr[tgt]:
            size = _heap_push(hkey, hsrc, hrank, size, d, tgt, 0)
    return n_dist


@njit(parallel=True, cache=True)
def search_batch(x, indptr, indices, gptr, gmem, queries, starts, k, budget, n_chunks):
    """Backtrack search of every query row (``starts[i]`` is query i's start vertex), ``n_chunks`` chunks in parallel.

    Returns ``(sq_dist (Q, k) float32, point indices (Q, k) int64, distance computations (Q,) int32)``; rows with
    fewer than ``k`` reachable points are padded with inf / -1.
    """
    nq = queries.shape[0]
    nv = x.shape[0]
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    n_dist = np.zeros(nq, dtype=np.int32)
    chunk = (nq + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * chunk
        hi = min(nq, lo + chunk)
        if lo >= hi:
            continue
        visited = np.zeros(nv, dtype=np.int32)
        hcap = min(budget, nv) + 1
        hkey = np.empty(hcap, dtype=np.float32)
        hsrc = np.empty(hcap, dtype=np.int32)
        hrank = np.empty(hcap, dtype=np.int32)
        for i in range(lo, hi):
            n_dist[i] = backtrack(
                x, indptr, indices, gptr, gmem, queries[i], starts[i], k, budget, visited, i - lo + 1,
                hkey, hsrc, hrank, out_d[i], out_i[i],
            )  # fmt: skip
    return out_d, out_i, n_dist


# ----------------------------------------------------------------------------------------------------------------------
# Refinement: backtrack-search candidates per vertex, re-pruned by occlusion.
# ----------------------------------------------------------------------------------------------------------------------


@njit(cache=True)
def _occlusion_prune(x, v, cand, cand_len, n_cand, out_nbr, out_len, max_keep):
    """Keep the candidates of vertex ``v`` (sorted ascending by length) that no kept shorter edge occludes.

    ``u -> c`` is dropped when some kept ``u -> e`` has ``D(u, e) < D(u, c)`` and ``D(e, c) < D(u, c)``. Stops after
    ``max_keep`` kept edges (``< 0``: no limit). Returns the number kept.
    """
    kept = 0
    for j in range(n_cand):
        c = cand[j]
        lc = cand_len[j]
        occluded = False
        for t in range(kept):
            e = out_nbr[t]
            if out_len[t] < lc and _sqdist(x[e], x[c]) < lc:
                occluded = True
                break
        if not occluded:
            out_nbr[kept] = c
            out_len[kept] = lc
            kept += 1
            if max_keep >= 0 and kept >= max_keep:
                break
    return kept


@njit(parallel=True, cache=True)
def refine(x, indptr, indices, budget, n_cand, max_degree, n_chunks):
    """One refinement pass: each vertex's out-edges are re-chosen from its current edges plus the ``n_cand`` nearest
    vertices found by backtrack search for the vertex itself (from itself, ``budget`` distance computations),
    pruned by the occlusion rule and capped at ``max_degree`` (``< 0``: no cap). Reads the old graph, writes a new
    one (Jacobi style), so the result does not depend on thread scheduling.

    Returns the new dense ``(nbr, lens, deg)``.
    """
    nv = x.shape[0]
    max_old = 0
    for v in range(nv):
        max_old = max(max_old, indptr[v + 1] - indptr[v])
    width = max_old + n_cand
    nbr = np.full((nv, width), -1, dtype=np.int32)
    lens = np.full((nv, width), np.inf, dtype=np.float32)
    deg = np.zeros(nv, dtype=np.int32)
    gptr = np.arange(nv + 1).astype(np.int64)
    gmem = np.arange(nv).astype(np.int64)
    kk = n_cand + 1
    chunk = (nv + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * chunk
        hi = min(nv, lo + chunk)
        if lo >= hi:
            continue
        visited = np.zeros(nv, dtype=np.int32)
        seen = np.zeros(nv, dtype=np.int32)
        hcap = min(budget, nv) + 1
        hkey = np.empty(hcap, dtype=np.float32)
        hsrc = np.empty(hcap, dtype=np.int32)
        hrank = np.empty(hcap, dtype=np.int32)
        od = np.empty(kk, dtype=np.float32)
        oi = np.empty(kk, dtype=np.int64)
        cand = np.empty(width, dtype=np.int32)
        cand_len = np.empty(width, dtype=np.float32)
        for v in range(lo, hi):
            stamp = v - lo + 1
            od[:] = np.inf
            oi[:] = -1
            backtrack(x, indptr, indices, gptr, gmem, x[v], v, kk, budget, visited, stamp, hkey, hsrc, hrank, od, oi)
            n = 0
            seen[v] = stamp
            for j in range(kk):
                w = oi[j]
                if w >= 0 and seen[w] != stamp:
                    seen[w] = stamp
                    cand[n] = w
                    cand_len[n] = od[j]
                    n += 1
            for e in range(indptr[v], indptr[v + 1]):
                w = indices[e]
                if seen[w] != stamp:
                    seen[w] = stamp
                    cand[n] = w
                    cand_len[n] = _sqdist(x[v], x[w])
                    n += 1
            # Ascending by length; the stable sort keeps ties in candidate order, so the result is deterministic.
            order = np.argsort(cand_len[:n], kind="mergesort")
            sc = cand[:n][order]
            sl = cand_len[:n][order]
            deg[v] = _occlusion_prune(x, v, sc, sl, n, nbr[v], lens[v], max_degree)
    return nbr, lens, deg
