"""Numba kernels of NN-descent's random-projection-forest start (:func:`smartmine.index.knn_graph.forest_start`).

A tree splits the points recursively by a hyperplane halfway between two of them, chosen at random (a split that
follows the data, as pynndescent's trees do for Euclidean data), until every leaf holds at most ``leaf_size``
points. Every pair of points in one leaf is then offered to both points' lists. Points of one tree's leaves are
disjoint, so leaves of one tree may be joined in parallel; a list keeps the ``K`` smallest ``(distance, id)`` it was
ever offered (:func:`smartmine.index._knn_kernels._insert`), so the result does not depend on the order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from smartmine.index._knn_kernels import _OPTS, _pair, _priority

SORT_KEYS_FROM = 32  # more candidates than this in one row: sort keys instead of an insertion sort


@njit(fastmath=True, **_OPTS)  # the 64-term dot products vectorise only with reassociation
def build_tree(x, seed, leaf_size, order, leaf_start, stack, tmp):
    """One random-projection tree over the rows of ``x`` (``(N, D)`` float32): fills ``order`` (``(N,)`` int32, the
    points grouped leaf by leaf) and ``leaf_start`` (``(N + 1,)`` int32; leaf ``l`` is ``order[leaf_start[l]:
    leaf_start[l + 1]]``) and returns the number of leaves. Scratch: ``stack`` ``(2, N + 1)`` int64, ``tmp``
    ``(N,)`` int32.

    A group larger than ``leaf_size`` is split by the hyperplane halfway between two of its points picked by a hash
    of ``(seed, group bounds)``; points on the plane go by a hash of their id. A split that leaves one side empty
    (identical points) is replaced by cutting the group in the middle. Deterministic for a given ``seed``."""
    n, dim = x.shape
    for i in range(n):
        order[i] = i
    normal = np.empty(dim, dtype=np.float32)
    side = np.empty(n, dtype=np.uint8)
    stack[0, 0] = 0
    stack[1, 0] = n
    top = 1
    n_leaves = 0
    while top > 0:
        top -= 1
        lo = stack[0, top]
        hi = stack[1, top]
        size = hi - lo
        if size <= leaf_size:
            leaf_start[n_leaves] = lo
            n_leaves += 1
            continue
        ia = _priority(seed, lo, hi) % size
        a = order[lo + ia]
        b = order[lo + (ia + 1 + _priority(seed, hi, lo) % (size - 1)) % size]
        offset = np.float32(0.0)
        for t in range(dim):
            normal[t] = x[a, t] - x[b, t]
            offset += normal[t] * (x[a, t] + x[b, t])
        offset *= np.float32(0.5)
        n_left = 0
        for i in range(lo, hi):
            p = order[i]
            s = np.float32(0.0)
            for t in range(dim):
                s += normal[t] * x[p, t]
            s -= offset
            left = s > 0 or (s == 0 and (_priority(seed, p, 1) & 1) == 0)
            side[i] = left
            n_left += left
        if n_left == 0 or n_left == size:
            mid = lo + size // 2
        else:
            # Stable two-way partition through the side flags (left points first, each side in its old order).
            mid = lo + n_left
            i_left = lo
            i_right = mid
            for i in range(lo, hi):
                tmp[i - lo] = order[i]
            for i in range(lo, hi):
                p = tmp[i - lo]
                if side[i]:
                    order[i_left] = p
                    i_left += 1
                else:
                    order[i_right] = p
                    i_right += 1
        stack[0, top] = mid
        stack[1, top] = hi
        stack[0, top + 1] = lo
        stack[1, top + 1] = mid
        top += 2
    leaf_start[n_leaves] = n
    # Leaves were emitted in depth-first order, lower bounds increasing: already sorted.
    return n_leaves


@njit(**_OPTS)
def _merge_row(nn_i, nn_d, nn_new, a, acc_i, acc_d, c, out_i, out_d, out_new, keys):
    """Merge ``c`` candidates ``acc_i[:c]`` / ``acc_d[:c]`` (distinct ids; capacity at least ``c + 1``) into ``a``'s
    ascending row: the row becomes the ``K`` smallest ``(distance, id)`` of both, without repeats, candidates flagged
    new (what :func:`_insert` gives for the candidates one by one, in one pass instead of a shift per insertion).
    Scratch ``out_*`` ``(K,)``, ``keys`` ``(c,)`` uint64. Returns the number of candidates that entered the row."""
    k = nn_i.shape[1]
    if c > SORT_KEYS_FROM:
        # Many candidates (the first trees, whose rows are still mostly empty): insertion sort is quadratic, so sort
        # (distance, id) keys. A non-negative float32's bits order like the float, so one uint64 compares both.
        bits = acc_d.view(np.uint32)
        for j in range(c):
            keys[j] = (np.uint64(bits[j]) << np.uint64(32)) | np.uint64(acc_i[j])
        keys[:c].sort()
        for j in range(c):
            acc_i[j] = np.int32(keys[j] & np.uint64(0xFFFFFFFF))
            bits[j] = np.uint32(keys[j] >> np.uint64(32))
    else:
        for j in range(1, c):  # insertion sort by (distance, id): few candidates pass a row's threshold
            w = acc_i[j]
            d = acc_d[j]
            t = j - 1
            while t >= 0 and (acc_d[t] > d or (acc_d[t] == d and acc_i[t] > w)):
                acc_i[t + 1] = acc_i[t]
                acc_d[t + 1] = acc_d[t]
                t -= 1
            acc_i[t + 1] = w
            acc_d[t + 1] = d
    acc_d[c] = np.inf  # sentinel: ordered after every row entry
    acc_i[c] = np.iinfo(np.int32).max
    r = 0
    q = 0
    taken = 0
    for o in range(k):  # branch-free merge (selects, not jumps: which side wins is unpredictable)
        dq = acc_d[q]
        iq = acc_i[q]
        dr = nn_d[a, r]
        ir = nn_i[a, r]
        take = (dq < dr) | ((dq == dr) & (iq < ir))
        # A repeat of a listed point has the same (distance, id): it meets its entry here and is skipped.
        same = (dq == dr) & (iq == ir)
        out_i[o] = iq if take else ir
        out_d[o] = dq if take else dr
        out_new[o] = 1 if take else nn_new[a, r]
        q += take | same
        r += 1 - take
        taken += take
    for o in range(k):
        nn_i[a, o] = out_i[o]
        nn_d[a, o] = out_d[o]
        nn_new[a, o] = out_new[o]
    return taken


@njit(**_OPTS)
def join_leaves(
    x, order, leaf_start, leaf_lo, leaf_hi, nn_i, nn_d, nn_new, dmat, acc_i, acc_d, out_i, out_d, out_new, keys
):
    """Offer every pair of points in each of the leaves ``leaf_lo .. leaf_hi-1`` (of one tree) to both points'
    lists: a list keeps the ``K`` smallest ``(distance, id)`` of its entries and its leaf-mates, the newcomers
    flagged new. The leaf's distances are computed once into ``dmat`` (``(L, L)`` float32 scratch, ``L`` the largest
    leaf), then each row takes its leaf-mates below its last entry in one merge (:func:`_merge_row`; scratch
    ``acc_*`` ``(L + 1,)``, ``out_*`` ``(K,)``, ``keys`` ``(L,)`` uint64). Returns the number of insertions."""
    k = nn_i.shape[1]
    ins = 0
    for leaf in range(leaf_lo, leaf_hi):
        s = leaf_start[leaf]
        e = leaf_start[leaf + 1]
        m = e - s
        # (Prefetching the next leaf's rows here was measured and changed nothing: docs/BENCHMARKS.md, session 20.)
        for i in range(m):
            a = order[s + i]
            dmat[i, i] = np.inf
            for j in range(i + 1, m):
                d = _pair(x, a, order[s + j])
                dmat[i, j] = d
                dmat[j, i] = d
        for i in range(m):
            a = order[s + i]
            thr_d = nn_d[a, k - 1]
            thr_i = nn_i[a, k - 1]
            c = 0
            for j in range(m):  # branch-free: always write, advance when the pair passes (dmat[i, i] is inf)
                d = dmat[i, j]
                b = order[s + j]
                acc_i[c] = b
                acc_d[c] = d
                c += (d < thr_d) | ((d == thr_d) & (b < thr_i))
            if c:
                ins += _merge_row(nn_i, nn_d, nn_new, a, acc_i, acc_d, c, out_i, out_d, out_new, keys)
    return ins
