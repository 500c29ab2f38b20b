"""Numba kernels of the insertion construction of FANNG (``FanngIndex(construction="insert")``, ours).

Vertices are inserted in batches (:mod:`smartmine.index.fanng_insert`). Each new vertex searches the graph of the
vertices inserted before its batch (best-first beam search from the start vertex, the dense ``(V, cap)`` adjacency of
:mod:`smartmine.index._fanng_kernels`), keeps the search's nearest vertices that survive FANNG's occlusion rule as its
out-edges, and offers each of them the reverse edge, which the target re-prunes with the same rule.

Same conventions as :mod:`smartmine.index._fanng_kernels`: squared Euclidean float32 distances, rows of the dense
table ascending by length, plain loops, GIL released so that the Python side runs disjoint row ranges in parallel.
"""

from __future__ import annotations

from numba import njit

from smartmine.index._fanng_kernels import _sqdist, occlusion_prune

_OPTS = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**_OPTS)
def _beam_search(x, nbr, deg, q, start, width, pool_i, pool_d, done, mark, stamp):
    """Best-first search for ``x[q]`` from ``start``: keeps the ``width`` nearest vertices found (``pool_i``/``pool_d``,
    ascending, ties in order of discovery) and expands the nearest unexpanded one until all pooled vertices are
    expanded. ``q`` itself is never a result. ``mark`` (V,) int32: ``mark[v] == stamp`` once ``v``'s distance has been
    computed in this search (the caller gives every search of a ``mark`` array its own ``stamp``).

    Returns ``(entries in the pool, distance computations)``."""
    mark[q] = stamp
    mark[start] = stamp
    pool_i[0] = start
    pool_d[0] = _sqdist(x, start, x, q)
    done[0] = 0
    n = 1
    n_dist = 1
    cursor = 0  # every pool entry before it is expanded
    while cursor < n:
        u = pool_i[cursor]
        done[cursor] = 1
        nxt = cursor + 1
        for e in range(deg[u]):
            v = nbr[u, e]
            if mark[v] == stamp:
                continue
            mark[v] = stamp
            dv = _sqdist(x, v, x, q)
            n_dist += 1
            if n == width and dv >= pool_d[n - 1]:
                continue
            pos = n if n < width else width - 1
            while pos > 0 and pool_d[pos - 1] > dv:
                if pos < width:
                    pool_i[pos] = pool_i[pos - 1]
                    pool_d[pos] = pool_d[pos - 1]
                    done[pos] = done[pos - 1]
                pos -= 1
            pool_i[pos] = v
            pool_d[pos] = dv
            done[pos] = 0
            if n < width:
                n += 1
            if pos < nxt:
                nxt = pos
        cursor = nxt
        while cursor < n and done[cursor]:
            cursor += 1
    return n, n_dist


@njit(**_OPTS)
def insert_range(x, nbr, deg, pts, lo, hi, start, width, keep, out_i, out_d, out_n, mark, pool_i, pool_d, done):
    """Out-edges of the new vertices ``pts[lo:hi]``: beam search (``width``) for each over the current graph, then
    occlusion pruning of the pool to at most ``keep`` edges, written to row ``r`` of ``out_i``/``out_d`` (``(B,
    keep)``) and ``out_n[r]`` for ``pts[r]``. The graph is only read. ``mark`` (V,) int32 scratch of this thread,
    stamped with the vertex id, so it must hold no id of ``pts[lo:hi]`` on entry (``-1`` fill, or marks of other
    vertices). Returns the distance computations."""
    total = 0
    for r in range(lo, hi):
        q = pts[r]
        n, nd = _beam_search(x, nbr, deg, q, start, width, pool_i, pool_d, done, mark, q)
        total += nd
        out_n[r] = occlusion_prune(x, pool_i, pool_d, n, keep, out_i, out_d, r)
    return total


@njit(**_OPTS)
def reprune_rows(x, nbr, lens, deg, rows, ptr, offer_i, offer_d, lo, hi, keep, cbuf, lbuf):
    """Vertices ``rows[lo:hi]`` take the offered edges ``offer_i[ptr[r]:ptr[r+1]]`` (ascending ``offer_d``, new
    targets: neither the vertex nor one of its edges): current edges and offers merged by length (current first on
    ties), re-pruned by occlusion to at most ``keep``, written back to the vertex's row of ``nbr``/``lens``/``deg``.
    Each vertex appears once in ``rows``. Scratch ``cbuf``/``lbuf``: at least ``nbr.shape[1]`` + the most offers."""
    for r in range(lo, hi):
        v = rows[r]
        a, a_end = 0, deg[v]
        b, b_end = ptr[r], ptr[r + 1]
        n = 0
        while a < a_end or b < b_end:
            if b >= b_end or (a < a_end and lens[v, a] <= offer_d[b]):
                cbuf[n] = nbr[v, a]
                lbuf[n] = lens[v, a]
                a += 1
            else:
                cbuf[n] = offer_i[b]
                lbuf[n] = offer_d[b]
                b += 1
            n += 1
        # The merged list is a copy, so the row can be rewritten in place.
        deg[v] = occlusion_prune(x, cbuf, lbuf, n, keep, nbr, lens, v)
