"""Numba kernels of the FANNG graph (Harwood & Drummond, CVPR 2016): Traverse-Add construction, backtrack search and
the occlusion re-pruning of refinement.

Everything here works on *vertices* ``0 .. V-1`` (the distinct vectors, rows of ``x``); :mod:`smartmine.index.fanng`
maps them back to the caller's points. Distances are squared Euclidean in float32: every rule of the method only
compares distances, and squaring is monotone.

Two adjacency layouts are used:

* construction: a dense ``(V, cap)`` table of targets ``nbr`` and squared lengths ``lens`` with the out-degree
  ``deg[v]``; each row is sorted ascending by length; ``cap`` doubles when a row fills up;
* search: CSR ``indptr`` (``V + 1``, int64) / ``indices`` (int32), each vertex's edges ascending by length; the
  search kernel reads ``indptr`` from the packed vertex table of :func:`pack_rows` (vector and edge range in one
  cache-aligned row).

Compile time matters as much as run time (a clean checkout has no numba cache, and the test suite pays for every
kernel): there are three entry points (:func:`grow_graph`, :func:`search_range`, :func:`prune_range`), each compiled
for one signature, written as plain loops (no array expressions, no sorting library calls, no ``parallel=True``).
They release the GIL (``nogil``), so the Python side runs them on disjoint row ranges from a thread pool.

Callers validate inputs; kernels trust shapes and finiteness and never recurse (Traverse-Add uses an explicit stack).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from smartmine.index._prefetch import prefetch_row

# Status codes returned by the construction kernel.
STATUS_OK = 0
STATUS_MAX_PAIRS = 1  # the random-pair budget ran out before the success target was met
STATUS_MAX_OPS = 2  # a Traverse-Add cascade exceeded its operation budget (pathological input)

_OPTS = {"cache": True, "nogil": True, "boundscheck": False}


@njit(fastmath=True, **_OPTS)
def _sqdist_prefix(x, i, y, j, dim):
    """Squared Euclidean distance of the first ``dim`` entries of rows ``x[i]`` and ``y[j]`` (fastmath lets LLVM
    vectorise the reduction)."""
    s = np.float32(0.0)
    for t in range(dim):
        d = x[i, t] - y[j, t]
        s += d * d
    return s


@njit(**_OPTS)
def _sqdist(x, i, y, j):
    """Squared Euclidean distance of rows ``x[i]`` and ``y[j]``."""
    return _sqdist_prefix(x, i, y, j, x.shape[1])


# ----------------------------------------------------------------------------------------------------------------------
# Construction: naive downhill search and Traverse-Add on a dense, growable adjacency table.
# ----------------------------------------------------------------------------------------------------------------------


@njit(**_OPTS)
def _downhill(x, nbr, deg, target, start):
    """Naive downhill search: from ``start``, move to the out-neighbour closest to ``x[target]`` while it is strictly
    closer than the current vertex. Returns ``(vertex where it stopped, distance computations used)``.

    Reaching ``target`` by index counts as success even when another vertex is at distance 0 from it.
    """
    cur = start
    dcur = _sqdist(x, cur, x, target)
    n_dist = 1
    while cur != target:
        best = -1
        dbest = dcur
        for e in range(deg[cur]):
            v = nbr[cur, e]
            if v == target:
                return target, n_dist
            dv = _sqdist(x, v, x, target)
            n_dist += 1
            if dv < dbest:
                dbest = dv
                best = v
        if best < 0:
            break
        cur = best
        dcur = dbest
    return cur, n_dist


@njit(**_OPTS)
def _grow(nbr, lens):
    """Copy of the adjacency table with twice the capacity (new slots: -1 / inf)."""
    n, cap = nbr.shape
    nbr2 = np.empty((n, 2 * cap), dtype=np.int32)
    lens2 = np.empty((n, 2 * cap), dtype=np.float32)
    for v in range(n):
        for e in range(cap):
            nbr2[v, e] = nbr[v, e]
            lens2[v, e] = lens[v, e]
        for e in range(cap, 2 * cap):
            nbr2[v, e] = -1
            lens2[v, e] = np.inf
    return nbr2, lens2


@njit(**_OPTS)
def _traverse_add(x, nbr, lens, deg, v1, v2, stack, scratch_i, scratch_f, max_ops):
    """Traverse-Add(v1, v2) with an explicit stack of pending ``(from, to)`` calls.

    For each call: ``u = downhill(to, from)``; if ``u != to``, add ``u -> to``, drop the longer edges of ``u`` that the
    new edge occludes, queue Traverse-Add(u, w) for every dropped ``u -> w`` (so w stays reachable from u), then queue
    Traverse-Add(to, u). The stack pops calls in the order the recursive definition would make them.

    ``scratch_i``/``scratch_f`` hold ``(2, cap)`` rows of scratch (kept tail, removed targets). Returns
    ``(nbr, lens, stack, scratch_i, scratch_f, n_dist, status)``; arrays may have been reallocated to grow.
    """
    stack[0, 0] = v1
    stack[0, 1] = v2
    sp = 1
    ops = 0
    n_dist = 0
    while sp > 0:
        ops += 1
        if ops > max_ops:
            return nbr, lens, stack, scratch_i, scratch_f, n_dist, STATUS_MAX_OPS
        sp -= 1
        a = stack[sp, 0]
        b = stack[sp, 1]
        if a == b:
            continue
        u, nd = _downhill(x, nbr, deg, b, a)
        n_dist += nd
        if u == b:
            continue
        dub = _sqdist(x, u, x, b)
        n_dist += 1
        # Rebuild u's row in place: edges no longer than the new one stay (they cannot be occluded by it), then the
        # new edge, then each longer edge unless u->b occludes it (D(b, w) < D(u, w); D(u, b) < D(u, w) holds).
        d_u = deg[u]
        pos = 0
        while pos < d_u and lens[u, pos] <= dub:
            pos += 1
        n_keep = 0
        n_removed = 0
        for j in range(pos, d_u):
            w = nbr[u, j]
            if _sqdist(x, b, x, w) < lens[u, j]:
                scratch_i[1, n_removed] = w
                n_removed += 1
            else:
                scratch_i[0, n_keep] = w
                scratch_f[0, n_keep] = lens[u, j]
                n_keep += 1
        n_dist += d_u - pos
        new_deg = pos + 1 + n_keep
        if new_deg > nbr.shape[1]:
            nbr, lens = _grow(nbr, lens)
            si = np.empty((2, nbr.shape[1]), dtype=np.int32)
            sf = np.empty((2, nbr.shape[1]), dtype=np.float32)
            for j in range(n_keep):
                si[0, j] = scratch_i[0, j]
                sf[0, j] = scratch_f[0, j]
            for j in range(n_removed):
                si[1, j] = scratch_i[1, j]
            scratch_i, scratch_f = si, sf
        nbr[u, pos] = b
        lens[u, pos] = dub
        for j in range(n_keep):
            nbr[u, pos + 1 + j] = scratch_i[0, j]
            lens[u, pos + 1 + j] = scratch_f[0, j]
        for j in range(new_deg, d_u):
            nbr[u, j] = -1
            lens[u, j] = np.inf
        deg[u] = new_deg
        # Queue: Traverse-Add(b, u) runs last, the removed edges first in their original order.
        need = sp + 1 + n_removed
        if need > stack.shape[0]:
            bigger = np.empty((2 * need, 2), dtype=np.int32)
            for j in range(sp):
                bigger[j, 0] = stack[j, 0]
                bigger[j, 1] = stack[j, 1]
            stack = bigger
        stack[sp, 0] = b
        stack[sp, 1] = u
        sp += 1
        for j in range(n_removed - 1, -1, -1):
            stack[sp, 0] = u
            stack[sp, 1] = scratch_i[1, j]
            sp += 1
    return nbr, lens, stack, scratch_i, scratch_f, n_dist, STATUS_OK


@njit(inline="always", **_OPTS)
def _record_pair(hist, counters, ok):
    """Enter one random pair's downhill outcome ``ok`` (0/1) into the sliding window ``hist`` (its length is the
    window); ``counters`` (int64): ``[pairs so far, successes in the window, ...]``, updated in place."""
    window = hist.shape[0]
    slot = counters[0] % window
    if counters[0] >= window:
        counters[1] -= hist[slot]
    hist[slot] = ok
    counters[1] += ok
    counters[0] += 1


@njit(inline="always", **_OPTS)
def _target_met(hist, counters, need):
    """Whether at least a full window of pairs was tested and the window holds ``need`` successes."""
    return counters[0] >= hist.shape[0] and counters[1] >= need


@njit(**_OPTS)
def grow_graph(x, nbr, lens, deg, repair_start, target_success, window, seed, max_pairs, max_ops, max_rounds):
    """Traverse-Add phase of construction, in one of two modes (one kernel, so Traverse-Add is compiled once).

    * ``repair_start < 0`` — **random pairs**: each pair ``(v1, v2)`` (distinct, uniform) is first tested with
      downhill search from v1 towards v2; the outcome enters a sliding window of the last ``window`` pairs, and a
      failed pair is repaired by Traverse-Add. Stops when at least ``window`` pairs were tested and the window's
      success rate is at least ``target_success``, or after ``max_pairs`` pairs.
    * ``repair_start >= 0`` — **reachability repair**: Traverse-Add(start, v) for every vertex v that downhill search
      from ``start`` does not reach, in passes over all vertices until a pass finds none (a repair can remove an edge
      an earlier vertex's path used), at most ``max_rounds`` passes.

    Either mode stops when one Traverse-Add cascade exceeds ``max_ops`` calls. ``nbr``/``lens``/``deg`` (the graph
    so far) are updated in place unless they must grow.

    Returns ``(nbr, lens, n_pairs_or_repairs, success_rate_or_unreached, n_dist, status)``.
    """
    n = x.shape[0]
    stack = np.empty((64, 2), dtype=np.int32)
    scratch_i = np.empty((2, nbr.shape[1]), dtype=np.int32)
    scratch_f = np.empty((2, nbr.shape[1]), dtype=np.float32)
    n_dist = 0
    status = STATUS_OK
    if n < 2:
        return nbr, lens, 0, 1.0, 0, STATUS_OK
    if repair_start >= 0:
        n_rep = 0
        n_fail = 0
        for _ in range(max_rounds):
            n_fail = 0
            for v in range(n):
                u, nd = _downhill(x, nbr, deg, v, repair_start)
                n_dist += nd
                if u != v:
                    n_fail += 1
                    nbr, lens, stack, scratch_i, scratch_f, nd, status = _traverse_add(
                        x, nbr, lens, deg, repair_start, v, stack, scratch_i, scratch_f, max_ops
                    )
                    n_dist += nd
                    if status != STATUS_OK:
                        return nbr, lens, n_rep + n_fail, float(n_fail), n_dist, status
            n_rep += n_fail
            if n_fail == 0:
                break
        return nbr, lens, n_rep, float(n_fail), n_dist, STATUS_OK

    np.random.seed(seed)  # noqa: NPY002 - numba seeds its own generator this way
    hist = np.zeros(window, dtype=np.uint8)
    counters = np.zeros(2, dtype=np.int64)  # pairs so far, successes in the window
    need = int(np.ceil(target_success * window - 1e-9))
    while True:
        if _target_met(hist, counters, need):
            break
        if counters[0] >= max_pairs:
            status = STATUS_MAX_PAIRS
            break
        v1 = np.random.randint(0, n)  # noqa: NPY002 - numba has no Generator API
        v2 = np.random.randint(0, n - 1)  # noqa: NPY002
        if v2 >= v1:
            v2 += 1
        u, nd = _downhill(x, nbr, deg, v2, v1)
        n_dist += nd
        ok = 1 if u == v2 else 0
        _record_pair(hist, counters, ok)
        if not ok:
            nbr, lens, stack, scratch_i, scratch_f, nd, status = _traverse_add(
                x, nbr, lens, deg, v1, v2, stack, scratch_i, scratch_f, max_ops
            )
            n_dist += nd
            if status != STATUS_OK:
                break
    rate = counters[1] / min(max(counters[0], 1), window)
    return nbr, lens, counters[0], rate, n_dist, status


@njit(**_OPTS)
def downhill_range(x, nbr, deg, v1, v2, lo, hi, ok, nd):
    """Downhill tests of the pairs ``lo .. hi-1``: ``ok[i]`` is 1 when naive downhill search from ``v1[i]`` reaches
    ``v2[i]``, ``nd[i]`` its distance computations. Reads the graph only, so disjoint ranges may run in parallel."""
    for i in range(lo, hi):
        u, d = _downhill(x, nbr, deg, v2[i], v1[i])
        ok[i] = 1 if u == v2[i] else 0
        nd[i] = d
    return 0


@njit(**_OPTS)
def repair_failed_pairs(x, nbr, lens, deg, v1, v2, ok, nd, hist, counters, need, max_ops):
    """The sequential half of a batch of random pairs tested by :func:`downhill_range`: in pair order, each outcome
    enters the sliding window ``hist`` (its length is the window) and a failed pair gets Traverse-Add (which re-tests
    on the current graph first, so a pair an earlier repair fixed costs one downhill search). Stops before a pair once
    the window holds ``need`` successes after at least a full window, as :func:`grow_graph` does.

    ``counters`` (int64, updated in place): ``[pairs so far, successes in the window, distance computations]``.
    Returns ``(nbr, lens, done, status)``; ``done`` is True when the success target was reached."""
    stack = np.empty((64, 2), dtype=np.int32)
    scratch_i = np.empty((2, nbr.shape[1]), dtype=np.int32)
    scratch_f = np.empty((2, nbr.shape[1]), dtype=np.float32)
    for i in range(v1.shape[0]):
        if _target_met(hist, counters, need):
            return nbr, lens, True, STATUS_OK
        _record_pair(hist, counters, ok[i])
        counters[2] += nd[i]
        if not ok[i]:
            nbr, lens, stack, scratch_i, scratch_f, d, status = _traverse_add(
                x, nbr, lens, deg, v1[i], v2[i], stack, scratch_i, scratch_f, max_ops
            )
            counters[2] += d
            if status != STATUS_OK:
                return nbr, lens, False, status
    return nbr, lens, _target_met(hist, counters, need), STATUS_OK


# ----------------------------------------------------------------------------------------------------------------------
# Backtrack search over the CSR graph.
# ----------------------------------------------------------------------------------------------------------------------

_ROW_ALIGN = 16  # float32 entries per 64-byte cache line
META = 5  # int32 columns after the vector in a packed row: edge start, edge end, first point, points, gptr


def pack_rows(x: np.ndarray, indptr: np.ndarray, gptr: np.ndarray, gmem: np.ndarray) -> np.ndarray:
    """The packed vertex table of :func:`search_range`: ``(V, W)`` float32 with rows aligned to 64 bytes and ``W`` a
    whole number of cache lines. Row ``v`` holds ``x[v]`` in columns ``0 .. D-1`` and then, as int32 bit patterns
    (:data:`META` columns after ``D``): the range ``indptr[v] .. indptr[v + 1]`` of its out-edges, the first of its
    points ``gmem[gptr[v]]``, its number of points and ``gptr[v]``. Needs fewer than 2**31 edges and points."""
    n, dim = x.shape
    if max(int(indptr[-1]), int(gptr[-1])) >= 2**31:
        raise ValueError("FanngIndex: more than 2**31 - 1 edges or points do not fit the packed int32 offsets")
    width = -(-(dim + META) // _ROW_ALIGN) * _ROW_ALIGN
    raw = np.zeros(n * width + _ROW_ALIGN, dtype=np.float32)
    offset = (-raw.ctypes.data % 64) // 4
    block = raw[offset : offset + n * width].reshape(n, width)
    block[:, :dim] = x
    meta = block.view(np.int32)
    meta[:, dim] = indptr[:-1]
    meta[:, dim + 1] = indptr[1:]
    meta[:, dim + 2] = gmem[gptr[:-1]]
    meta[:, dim + 3] = np.diff(gptr)
    meta[:, dim + 4] = gptr[:-1]
    return block


@njit(**_OPTS)
def _topk_insert(out_d, out_i, row, k, d, idx):
    """Insert ``(d, idx)`` into row ``row`` of the ascending top-k lists (equal distances keep insertion order)."""
    j = k - 1
    while j > 0 and out_d[row, j - 1] > d:
        out_d[row, j] = out_d[row, j - 1]
        out_i[row, j] = out_i[row, j - 1]
        j -= 1
    out_d[row, j] = d
    out_i[row, j] = idx


# Speculative prefetch depth: the rows of the next few targets of the heap's root source are requested ahead of their
# distance computation, so that their memory latency overlaps with the current one. Session 3 measured 1.5-1.7x at
# 100k x 64 (one thread, against prefetching only the next edge) with 6, less with 3, 4 or 8; visited targets are
# prefetched too, because testing them first costs a mispredicted branch, more than a wasted prefetch. Session 17:
# against no prefetching at all, it only pays once the table outgrows the caches (callers pass 0 below that, see
# ``FanngIndex.search_prefetch``): on tables that fit, the prefetching code made each visit 15-30 % dearer.
LOOKAHEAD = 6
_LOW32 = np.int64(0xFFFFFFFF)  # a heap entry's next-edge position (see search_range)
_NO_SIGN = np.int32(0x7FFFFFFF)  # clears a float's sign bit, so that -0.0 keys as 0.0
_RUN_DONE = np.int64(1) << 62  # ``ahead`` once a source's last edge has been requested


@njit(inline="always", **_OPTS)
def _prefetch_ahead(block, marked, e, ahead, depth):
    """Prefetch the rows of the targets of edges ``max(e, ahead) .. e + depth - 1`` of one source, stopping after
    its last edge (marked negative, see :func:`mark_last_edges`); returns the new ``ahead`` (first edge not yet
    requested, or :data:`_RUN_DONE`), so that no edge is requested twice."""
    if ahead < e:
        ahead = e
    lim = e + depth
    while ahead < lim:
        raw = marked[ahead]
        if raw < 0:
            prefetch_row(block, ~raw)
            return _RUN_DONE
        prefetch_row(block, raw)
        ahead += 1
    return ahead


def mark_last_edges(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The copy of ``indices`` that :func:`search_range` reads: every vertex's last out-edge stored as ``~target``
    (negative), which ends the vertex's run of edges, so that a heap entry needs no end position."""
    marked = np.array(indices, dtype=np.int32)
    last = indptr[1:][np.diff(indptr) > 0] - 1
    marked[last] = ~marked[last]
    return marked


@njit(**_OPTS)
def search_range(
    block, dim, indices, gmem, queries, qrows, starts, k, budget, lo, hi, out_d, out_i, n_dist,
    vbits, vlist, heap, ef, efbuf, lookahead,
):  # fmt: skip
    """Backtrack search for queries ``lo .. hi-1``: query ``i`` is ``queries[qrows[i], :dim]``, started at
    ``starts[i]``, with at most ``budget`` distance computations.

    ``block`` is the packed vertex table (see :func:`pack_rows`): row ``v`` holds the vector of vertex ``v`` in
    columns ``0 .. dim-1`` and, as int32 bit patterns in the :data:`META` columns after it, the range of its
    out-edges in ``indices`` (ascending by length; the copy of :func:`mark_last_edges`), its first point and its
    group in ``gmem``. One row is all a visit reads about a vertex, so one cache-line run serves the distance, the
    result and the edges' location (ours: a memory layout, no effect on results; 1.2-1.4x at 100k x 64 over separate
    ``indptr``/``gptr`` arrays).

    A priority queue holds edges keyed by the distance from the query to the edge's source vertex; each source has
    one int64 entry in ``heap``: the key's float32 bit pattern in the high 32 bits (non-negative floats order as
    their bit patterns do, and only the high half is compared) and the position in ``indices`` of its next
    unexplored (next-longer) edge in the low 32; the source's last edge is marked in ``indices``. Popping the
    minimum visits the edge's target if it is new (one distance computation; the target enters the queue with its
    shortest edge) and advances the source to its next edge, which keeps its key, so the heap root stays put. The
    best ``k`` visited vertices are kept, each expanded to its group of points (the first one stored in its packed
    row, the others, exact duplicates, in ``gmem``).

    Early termination (``ef > 0``; beyond the paper, whose search always spends its budget): ``efbuf`` keeps the
    ``ef`` smallest vertex distances seen so far (ascending), and the search stops as soon as the queue's nearest
    source is farther than the ``ef``-th of them, i.e. when no unexplored edge starts closer than the ``ef`` best
    vertices found (the stopping rule of HNSW's ``ef``). ``ef = 0``: spend the whole budget.

    ``lookahead``: prefetch the rows of the root source's next ``lookahead`` edges ahead of their distances (see
    :data:`LOOKAHEAD`); 0 turns prefetching off. No effect on results.

    Scratch: ``vbits`` (ceil(V / 64),) uint64 visited bits, all zero on entry and on return (each query clears the
    words of the vertices it listed in ``vlist``); ``vlist`` and ``heap`` (int64) of length ``budget + 1``. Writes
    rows ``lo .. hi-1`` of ``out_d``/``out_i`` (inf / -1 padded) and ``n_dist``.
    """
    one = np.uint64(1)
    meta = block.view(np.int32)
    fbits = np.empty(1, dtype=np.float32)  # float32 -> bit pattern, through memory
    ibits = fbits.view(np.int32)
    for i in range(lo, hi):
        for j in range(k):
            out_d[i, j] = np.inf
            out_i[i, j] = -1
        qr = qrows[i]
        s = starts[i]
        vbits[s >> 6] |= one << np.uint64(s & 63)
        vlist[0] = s
        n_vis = 1
        d0 = _sqdist_prefix(block, s, queries, qr, dim)
        nd = 1
        if ef > 0:
            efbuf[0] = d0
            for j in range(1, ef):
                efbuf[j] = np.inf
        # The start vertex's points, each inserted only while it still improves the list.
        g0 = meta[s, dim + 4]
        for m in range(meta[s, dim + 3]):
            if d0 < out_d[i, k - 1]:
                _topk_insert(out_d, out_i, i, k, d0, meta[s, dim + 2] if m == 0 else gmem[g0 + m])
        size = 0
        ahead = 0
        if meta[s, dim + 1] > meta[s, dim]:
            fbits[0] = d0
            heap[0] = (np.int64(ibits[0] & _NO_SIGN) << 32) | np.int64(meta[s, dim])
            size = 1
            if lookahead > 0:
                ahead = _prefetch_ahead(block, indices, meta[s, dim], 0, lookahead)
        while size > 0 and nd < budget:
            root = heap[0]
            if ef > 0:
                fbits[0] = efbuf[ef - 1]
                if (root >> 32) > (ibits[0] & _NO_SIGN):
                    break
            e = root & _LOW32
            raw = indices[e]
            # Advance the root's source to its next-longer edge (same key), or drop it after its last edge.
            if raw >= 0:
                tgt = raw
                heap[0] = root + 1
                if lookahead > 0:
                    ahead = _prefetch_ahead(block, indices, e + 1, ahead, lookahead)
            else:
                tgt = ~raw
                size -= 1
                if size > 0:
                    last = heap[size]
                    key = last >> 32
                    p = 0
                    while True:
                        c = 2 * p + 1
                        if c >= size:
                            break
                        if c + 1 < size and (heap[c + 1] >> 32) < (heap[c] >> 32):
                            c += 1
                        if (heap[c] >> 32) >= key:
                            break
                        heap[p] = heap[c]
                        p = c
                    heap[p] = last
                    if lookahead > 0:
                        ahead = _prefetch_ahead(block, indices, heap[0] & _LOW32, 0, lookahead)
            word = tgt >> 6
            bit = one << np.uint64(tgt & 63)
            if vbits[word] & bit:
                continue
            vbits[word] |= bit
            vlist[n_vis] = tgt
            n_vis += 1
            d = _sqdist_prefix(block, tgt, queries, qr, dim)
            nd += 1
            if ef > 0 and d < efbuf[ef - 1]:
                j = ef - 1
                while j > 0 and efbuf[j - 1] > d:
                    efbuf[j] = efbuf[j - 1]
                    j -= 1
                efbuf[j] = d
            if d < out_d[i, k - 1]:
                # The first point from the packed row; duplicates (rare) from gmem.
                _topk_insert(out_d, out_i, i, k, d, meta[tgt, dim + 2])
                g0 = meta[tgt, dim + 4]
                for m in range(g0 + 1, g0 + meta[tgt, dim + 3]):
                    _topk_insert(out_d, out_i, i, k, d, gmem[m])
            b0 = meta[tgt, dim]
            b1 = meta[tgt, dim + 1]
            if b1 > b0:
                # Push tgt's shortest edge with key d (sift up).
                fbits[0] = d
                key = np.int64(ibits[0] & _NO_SIGN)
                p = size
                while p > 0:
                    par = (p - 1) >> 1
                    if (heap[par] >> 32) <= key:
                        break
                    heap[p] = heap[par]
                    p = par
                heap[p] = (key << 32) | np.int64(b0)
                size += 1
                if p == 0 and lookahead > 0:  # tgt is the new root: its first edges come next
                    ahead = _prefetch_ahead(block, indices, b0, 0, lookahead)
        n_dist[i] = nd
        for j in range(n_vis):
            vbits[vlist[j] >> 6] = np.uint64(0)
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# Refinement: occlusion re-pruning of each vertex's candidate edges.
# ----------------------------------------------------------------------------------------------------------------------


@njit(**_OPTS)
def occlusion_prune(x, cand_i, cand_d, n, keep, out_i, out_d, row):
    """FANNG's occlusion rule over candidates ``cand_i[:n]`` of vertex ``row`` (ascending ``cand_d``, distinct, not
    the vertex itself): each is kept unless a kept shorter edge occludes it (``v→e`` occludes ``v→c`` iff ``D(v,e) <
    D(v,c)`` and ``D(e,c) < D(v,c)``), at most ``keep`` (``< 0``: all). Writes row ``row`` of ``out_i``/``out_d``,
    ``-1``/``inf`` padded, and returns the number kept. The candidates must not alias that row."""
    kept = 0
    for j in range(n):
        c = cand_i[j]
        lc = cand_d[j]
        occluded = False
        for t in range(kept):
            if out_d[row, t] < lc and _sqdist(x, out_i[row, t], x, c) < lc:
                occluded = True
                break
        if not occluded:
            out_i[row, kept] = c
            out_d[row, kept] = lc
            kept += 1
            if keep >= 0 and kept >= keep:
                break
    for t in range(kept, out_i.shape[1]):
        out_i[row, t] = -1
        out_d[row, t] = np.inf
    return kept


@njit(**_OPTS)
def prune_range(x, indptr, indices, cand_i, cand_d, lo, hi, max_keep, nbr, lens, deg, seen, cbuf, lbuf):
    """New out-edges of vertices ``lo .. hi-1``: the candidates ``cand_i[v - lo]`` (search results for vertex v, -1
    padded, possibly containing v) plus v's current CSR edges, sorted ascending by length (stable: ties keep candidate
    order, so the result is deterministic), then pruned by the occlusion rule: ``v -> c`` is dropped when a kept
    ``v -> e`` has ``D(v, e) < D(v, c)`` and ``D(e, c) < D(v, c)``. At most ``max_keep`` edges kept (``< 0``: all).

    Writes rows ``v`` of ``nbr``/``lens``/``deg``. Scratch: ``seen`` (V,) int32 filled with -1 by the caller (marks
    are vertex ids, so it is never cleared), ``cbuf``/``lbuf`` of length ``cand_i.shape[1] + max out-degree``.
    """
    for v in range(lo, hi):
        n = 0
        seen[v] = v
        r = v - lo
        for j in range(cand_i.shape[1]):
            w = cand_i[r, j]
            if w >= 0 and seen[w] != v:
                seen[w] = v
                cbuf[n] = w
                lbuf[n] = cand_d[r, j]
                n += 1
        for e in range(indptr[v], indptr[v + 1]):
            w = indices[e]
            if seen[w] != v:
                seen[w] = v
                cbuf[n] = w
                lbuf[n] = _sqdist(x, v, x, w)
                n += 1
        # Stable insertion sort by length (n is a few dozen).
        for a in range(1, n):
            c = cbuf[a]
            lc = lbuf[a]
            b = a
            while b > 0 and lbuf[b - 1] > lc:
                cbuf[b] = cbuf[b - 1]
                lbuf[b] = lbuf[b - 1]
                b -= 1
            cbuf[b] = c
            lbuf[b] = lc
        deg[v] = occlusion_prune(x, cbuf, lbuf, n, max_keep, nbr, lens, v)
