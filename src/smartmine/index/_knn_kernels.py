"""Numba kernels of the approximate all-points k-NN graph (NN-descent, Dong, Charikar & Li, WWW 2011).

The lists are a dense ``(N, K)`` table per point: neighbour ids ``nn_i`` (int32, ``-1`` padded), squared distances
``nn_d`` (float32, ``inf`` padded), ascending, and a "new" flag ``nn_new`` (uint8) per entry: an entry is new until it
has been offered to a local join once.

One iteration has two steps:

1. :func:`scan_offers` and :func:`take_offers` (``O(N K log S)``, orchestrated by
   :func:`smartmine.index.knn_graph.sample_candidates`): every point's *new* and *old* candidate sets, each at most
   ``S`` points, drawn from its forward entries and from the reverse of everybody's entries (a reverse edge matters
   as much as a forward one). When more than ``S`` offer themselves, the ``S`` with the smallest hash priority stay,
   a hash of ``(seed, iteration, source, target)``, so the sampling is deterministic. Then :func:`clear_sampled`:
   forward new entries that made it into the sample lose their new flag. A mutual pair offers each end twice; the
   repeat is dropped (it used to take a second slot: removing it gave 7 iterations instead of 9 and recall 0.988
   instead of 0.985 at 20k × 64, k = 64).
2. :func:`join_range` (parallel over disjoint ranges of points ``u``): the paper's local join. Every pair ``(a, b)``
   of ``u``'s candidates with at least one new gets its distance computed while those few vectors sit in cache (the
   next point's are prefetched); a pair that could enter ``a``'s or ``b``'s list (no farther than its last entry and
   not already listed) is written to the thread's update buffer. :func:`apply_range` then inserts the buffered
   updates, each thread owning a range of target rows. A row keeps the ``K`` smallest ``(distance, id)`` it was ever
   offered, whatever the order of the offers, so the lists do not depend on the thread count or the chunking.

   (Tried first and not kept: a *pull* join, in which each point scans its own two-hop neighbourhood and writes only
   its row. It needs no buffers, but every distance is a cache miss instead of a pair among cached vectors: 4-8x
   slower at 20k x 64.)

Distances are squared Euclidean in float32. Kernels trust shapes; the caller validates.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from smartmine.index._prefetch import prefetch_item, prefetch_row

_OPTS = {"cache": True, "nogil": True, "boundscheck": False}


@njit(fastmath=True, **_OPTS)
def _sqdist(x, i, j):
    """Squared Euclidean distance of rows ``x[i]`` and ``x[j]``."""
    s = np.float32(0.0)
    for t in range(x.shape[1]):
        d = x[i, t] - x[j, t]
        s += d * d
    return s


@njit(inline="always", **_OPTS)
def _priority(seed, a, b):
    """A 32-bit hash of ``(seed, a, b)`` (splitmix64 finaliser): the sampling priority of the candidate ``a -> b``."""
    z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(a) * np.uint64(0xD1B54A32D192ED03)
    z = z + np.uint64(b) * np.uint64(0x8CB92BA72F3D8DD7)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.uint32(z >> np.uint64(32))


@njit(inline="always", **_OPTS)
def _offer(ci, cp, cn, row, item, pri):
    """Offer ``item`` with priority ``pri`` to row ``row`` of a bounded max-heap of priorities (capacity
    ``ci.shape[1]``): it keeps the distinct items of smallest priority (an item already held is not added again)."""
    cap = ci.shape[1]
    c = cn[row]
    if c >= cap and pri >= cp[row, 0]:
        return
    hits = 0
    for t in range(c):  # a mutual pair offers each end twice (same priority): one slot is enough
        hits += ci[row, t] == item
    if hits:
        return
    if c < cap:
        p = c
        while p > 0:
            par = (p - 1) >> 1
            if cp[row, par] >= pri:
                break
            cp[row, p] = cp[row, par]
            ci[row, p] = ci[row, par]
            p = par
        cp[row, p] = pri
        ci[row, p] = item
        cn[row] = c + 1
    elif pri < cp[row, 0]:
        p = 0
        while True:
            ch = 2 * p + 1
            if ch >= cap:
                break
            if ch + 1 < cap and cp[row, ch + 1] > cp[row, ch]:
                ch += 1
            if cp[row, ch] <= pri:
                break
            cp[row, p] = cp[row, ch]
            ci[row, p] = ci[row, ch]
            p = ch
        cp[row, p] = pri
        ci[row, p] = item


@njit(**_OPTS)
def scan_offers(nn_i, nn_new, want_new, new_n, shift, src_lo, src_hi, heads, rec_row, rec_item, write):
    """Step 1a/1b of an iteration, for the sources ``src_lo .. src_hi-1``. A source ``v`` offers each of its entries
    ``u`` of the wanted kind (new if ``want_new`` else old) to its own row and itself to ``u``'s row; old offers go
    only to rows with new candidates (``new_n > 0``: the join never reads the others'). Each offer to a row of block
    ``b`` (rows ``b << shift`` onwards) advances ``heads[b]`` (int64); with ``write`` it is also stored there as a
    ``(row, item)`` record in ``rec_row`` / ``rec_item`` (int32), in scan order. Called once with zeroed ``heads``
    and ``write = False`` it counts the offers per block; once more with the blocks' start positions, it fills them."""
    k = nn_i.shape[1]
    for v in range(src_lo, src_hi):
        own = want_new or new_n[v] > 0
        for j in range(k):
            u = nn_i[v, j]
            if u < 0 or nn_new[v, j] != want_new:
                continue
            if own:
                b = v >> shift
                if write:
                    rec_row[heads[b]] = v
                    rec_item[heads[b]] = u
                heads[b] += 1
            if want_new or new_n[u] > 0:
                b = u >> shift
                if write:
                    rec_row[heads[b]] = u
                    rec_item[heads[b]] = v
                heads[b] += 1
    return 0


@njit(**_OPTS)
def take_offers(seed, ci, cp, cn, starts, per_block, block_lo, block_hi, rec_row, rec_item):
    """Step 1c: offer the records of blocks ``block_lo .. block_hi-1`` to their rows' candidate heaps (``(N, S)`` ids
    and uint32 priorities, counts ``(N,)``; :func:`_offer` keeps the ``S`` distinct items of smallest hash priority).
    Block ``b``'s records are ``starts[b * per_block] .. starts[(b + 1) * per_block] - 1``. Every write lands in the
    block's rows, so blocks may run in parallel, and the heaps of one block stay in cache while its records stream
    by: scattering each offer straight to its row, as the scan finds it, missed the cache on almost every offer
    (about 150 ns each at 100k points, docs/BENCHMARKS.md, session 19)."""
    for b in range(block_lo, block_hi):
        for p in range(starts[b * per_block], starts[(b + 1) * per_block]):
            row = rec_row[p]
            item = rec_item[p]
            _offer(ci, cp, cn, row, item, _priority(seed, row, item))
    return 0


@njit(**_OPTS)
def clear_sampled(nn_i, nn_new, seed, new_p, new_n, row_lo, row_hi):
    """Clear the new flag of every forward entry of rows ``row_lo .. row_hi-1`` that the candidate sampling put
    into its point's new candidates."""
    n, k = nn_i.shape
    cap = new_p.shape[1]
    for v in range(row_lo, row_hi):
        full = new_n[v] >= cap
        for j in range(k):
            # An entry is in the heap iff its priority is at most the root's (roots only shrink once a heap is full).
            if nn_new[v, j] and (not full or _priority(seed, v, nn_i[v, j]) <= new_p[v, 0]):
                nn_new[v, j] = 0
    return 0


@njit(inline="always", **_OPTS)
def _insert(nn_i, nn_d, nn_new, p, w, d):
    """Insert ``w`` at distance ``d`` into the ascending row ``p`` unless it is already there; the last entry drops
    out. Rows are ordered by ``(distance, id)``, so a row's content after any set of insertions does not depend on
    their order. Returns 1 when inserted (flagged new), else 0."""
    k = nn_i.shape[1]
    if not (d < nn_d[p, k - 1] or (d == nn_d[p, k - 1] and w < nn_i[p, k - 1])):
        return 0
    # Binary search for the first entry ordered after (d, w); most offers are rejected repeats, so this is the hot path.
    lo = 0
    hi = k - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        dm = nn_d[p, mid]
        if dm > d or (dm == d and nn_i[p, mid] > w):
            hi = mid
        else:
            lo = mid + 1
    j = lo
    # A repeat of w has the same distance (computed the same way): it would sit just before position j.
    t = j - 1
    while t >= 0 and nn_d[p, t] == d:
        if nn_i[p, t] == w:
            return 0
        t -= 1
    for t in range(k - 1, j, -1):
        nn_i[p, t] = nn_i[p, t - 1]
        nn_d[p, t] = nn_d[p, t - 1]
        nn_new[p, t] = nn_new[p, t - 1]
    nn_i[p, j] = w
    nn_d[p, j] = d
    nn_new[p, j] = 1
    return 1


@njit(inline="always", **_OPTS)
def _pair(x, a, b):
    """``D(a, b)``, the same float in both argument orders: every term is the square of a difference, which only
    changes sign, and the order of summation does not depend on the arguments. (It used to swap the arguments into a
    fixed order; that branch mispredicted on every other pair and was the only cost it added.)"""
    return _sqdist(x, a, b)


@njit(inline="always", **_OPTS)
def _wanted(nn_i, nn_d, p, w, d):
    """Whether ``(w, d)`` could enter ``p``'s list: no farther than its last entry and not already in it. The repeat
    check scans the whole id row without branches (the compiler vectorises it): at k = 64 that was cheaper than a
    binary search over the distances, whose data-dependent branches mispredict."""
    k = nn_d.shape[1]
    if d > nn_d[p, k - 1]:
        return False
    hits = 0
    for t in range(k):
        hits += nn_i[p, t] == w
    return hits == 0


@njit(**_OPTS)
def _join_one(x, nn_i, nn_d, a, cands, j0, j1, out_a, out_b, out_d, m):
    """Pairs ``(a, cands[j])`` for ``j0 <= j < j1``: each distance becomes an update of ``a``'s list and of the other
    point's list where it could enter them. Filtering here, while the rows of ``a`` and of the few candidates are in
    cache, keeps the update buffer to the real changes (most pairs are already listed once the lists are good)."""
    for j in range(j0, j1):
        b = cands[j]
        if a == b:
            continue
        d = _pair(x, a, b)
        if _wanted(nn_i, nn_d, a, b, d):
            out_a[m] = a
            out_b[m] = b
            out_d[m] = d
            m += 1
        if _wanted(nn_i, nn_d, b, a, d):
            out_a[m] = b
            out_b[m] = a
            out_d[m] = d
            m += 1
    return m


NO_SLOT = 65535  # ``slot`` entry (uint16) of a point that is not among the current point's candidates
FILTER_WORDS = 1024  # uint64 words of _join_matrix's candidate filter: 8 KiB, a bit per id modulo 65,536
FILTER_MASK = FILTER_WORDS * 64 - 1
MATRIX_MIN_NEW = 16  # fewest new candidates for which join_range reads the candidates' lists once instead of per pair


@njit(inline="always", **_OPTS)
def _take_slots(row, count, slot, ids, c, filt):
    """Give each of ``row[:count]`` not seen yet the next slot (``ids[slot] = id``) and set its bit ``id mod
    (64 * FILTER_WORDS)`` in ``filt``; returns the slots used."""
    for i in range(count):
        w = row[i]
        if slot[w] == NO_SLOT:
            slot[w] = c
            ids[c] = w
            c += 1
            f = w & FILTER_MASK
            filt[f >> 6] |= np.uint64(1) << np.uint64(f & 63)
    return c


def listed_words(max_candidates: int) -> int:
    """uint64 words per row of :func:`_join_matrix`'s ``listed`` bits for up to ``2 * max_candidates`` slots: one bit
    per slot and a spare last bit that absorbs :data:`NO_SLOT` (list entries that are not candidates)."""
    return (2 * max_candidates) // 64 + 1


def update_capacity(chunk: int, max_candidates: int) -> int:
    """Entries of one update buffer that :func:`join_range` may fill over ``chunk`` points of up to ``S``
    new and ``S`` old candidates each (its worst case, plus the slot it writes before counting)."""
    s = max_candidates
    return chunk * (s * (s - 1) + 2 * s * s) + 2


def join_scratch(copies: int, n: int, max_candidates: int, dim: int) -> tuple[np.ndarray, ...]:
    """``copies`` sets of :func:`join_range`'s scratch, each a leading index of every array, in its argument order
    ``(slot, ids, thr, listed, dr, blk, filt)``: one set per call that runs at the same time."""
    s2 = 2 * max_candidates
    return (
        np.full((copies, n + 1), NO_SLOT, dtype=np.uint16),
        np.empty((copies, s2), dtype=np.int32),
        np.empty((copies, s2), dtype=np.float32),
        np.empty((copies, s2, listed_words(max_candidates)), dtype=np.uint64),
        np.empty((copies, s2), dtype=np.float32),
        np.empty((copies, s2, dim), dtype=np.float32),
        np.zeros((copies, FILTER_WORDS), dtype=np.uint64),
    )


@njit(inline="always", **_OPTS)
def _filtered(filt, z, n):
    """``z`` where it may be a candidate (its filter bit is set), else ``n`` (whose slot is :data:`NO_SLOT`; ``z``
    is ``-1`` for a padded entry). The filter sits in L1 while the ``(N + 1,)`` slot table does not fit the L2 cache
    from about 500k points: without the filter, at 1M points, most list entries (not candidates) missed it."""
    f = z & FILTER_MASK
    hit = (z >= 0) & (((filt[f >> 6] >> np.uint64(f & 63)) & np.uint64(1)) != np.uint64(0))
    return z if hit else n


@njit(**_OPTS)
def _join_matrix(x, nn_i, nn_d, u, new_i, new_n, old_i, old_n, out_a, out_b, out_d, m, slot, ids, thr, listed, dr, blk,
                 filt):  # fmt: skip
    """:func:`join_range`'s local join of point ``u`` for many new candidates: the same updates as the per-pair path
    (:func:`_join_one`), but "already listed" is looked up in a ``c x c`` bit table filled by one pass over each
    candidate's list (``c * K`` reads) instead of a scan of a list per pair that passes the distance test (up to
    ``c² K``), and a candidate both new and old is paired once. The candidates' vectors are copied into ``blk``
    once, so the ``c²/2`` distances read one contiguous block (the same floats as from ``x``). Scratch: ``slot``
    ``(N + 1,)`` uint16 of :data:`NO_SLOT` (restored on return), ``ids`` / ``thr`` / ``dr`` ``(2S,)``, ``listed``
    ``(2S, listed_words(S))`` uint64, ``blk`` ``(2S, D)`` float32, ``filt`` ``(FILTER_WORDS,)`` uint64 zeros
    (restored on return). Returns the new number of buffered updates.

    Both the table and the output are branch-free: a row's bits are gathered in registers (a byte table written
    entry by entry, and a branch per pair and direction that mispredicted about one time in four, took 54-57 µs per
    point of a first warm join at 100k × 64, S = 64, one thread; the bits and the unconditional writes below, 40 µs;
    same updates in the same order)."""
    n = x.shape[0]
    k = nn_d.shape[1]
    c_new = _take_slots(new_i[u], new_n[u], slot, ids, 0, filt)
    c = _take_slots(old_i[u], old_n[u], slot, ids, c_new, filt)
    one = np.uint64(1)
    zero = np.uint64(0)
    dim = x.shape[1]
    words = listed.shape[1]
    spare = np.int64(words * 64 - 1)
    for s in range(c):
        w = ids[s]
        thr[s] = nn_d[w, k - 1]
        for t in range(dim):
            blk[s, t] = x[w, t]
        # Bit t of row s: candidate t is in candidate s's list. Two words in registers when they hold every slot
        # (the common case, S <= 64; selects among four words cost 50 % more), else the table in memory.
        if c <= 128:
            b0 = zero
            b1 = zero
            for j in range(k):
                z = nn_i[w, j]
                t = np.int64(slot[_filtered(filt, z, n)])
                bit = one << np.uint64(t & 63)
                b0 |= bit if t < 64 else zero
                b1 |= bit if (t >= 64) & (t < 128) else zero
            listed[s, 0] = b0
            listed[s, 1] = b1
        else:
            for t in range(words):
                listed[s, t] = zero
            for j in range(k):
                z = nn_i[w, j]
                t = min(np.int64(slot[_filtered(filt, z, n)]), spare)  # NO_SLOT sets the spare last bit
                listed[s, t >> 6] |= one << np.uint64(t & 63)
    for i in range(c_new):
        a = ids[i]
        ta = thr[i]
        i_bit = np.uint64(i & 63)
        i_word = i >> 6
        for j in range(i + 1, c):  # the distances first: a tight loop without branches
            dr[j] = _pair(blk, i, j)
        for j in range(i + 1, c):
            # Every update is written; only the wanted ones advance m (the buffer has room for one more).
            d = dr[j]
            b = ids[j]
            out_a[m] = a
            out_b[m] = b
            out_d[m] = d
            m += (d <= ta) & (((listed[i, j >> 6] >> np.uint64(j & 63)) & one) == zero)
            out_a[m] = b
            out_b[m] = a
            out_d[m] = d
            m += (d <= thr[j]) & (((listed[j, i_word] >> i_bit) & one) == zero)
    for i in range(c):
        slot[ids[i]] = NO_SLOT
        filt[(ids[i] & FILTER_MASK) >> 6] = zero
    return m


@njit(**_OPTS)
def join_range(
    x, nn_i, nn_d, new_i, new_n, old_i, old_n, lo, hi, out_a, out_b, out_d, slot, ids, thr, listed, dr, blk, filt,
    min_new,
):
    """Local join of the candidates of points ``lo .. hi-1`` (the paper's, push style): every pair ``(a, b)`` of a
    point's candidates with ``a`` new and ``b`` new (once per pair) or old gets its distance computed; it becomes an
    update of ``a``'s list and of ``b``'s list where it is no farther than their current last entry and not already
    in it. The candidate vectors of one point are few and sit in cache while all their pairs are computed. Reads the
    lists, writes only the update buffer (capacity: ``2 * (n_new * (n_new - 1) / 2 + n_new * n_old) + 2`` per call)
    and the scratch of :func:`_join_matrix`. Returns the number of updates written (the buffer also needs one slot
    beyond them: :func:`_join_matrix` writes before it counts).

    A point with at least ``min_new`` new candidates (callers pass :data:`MATRIX_MIN_NEW`) goes through
    :func:`_join_matrix` (its pairs are many, so reading every candidate's list once is cheaper than a scan per
    pair); the others pair as before. Both paths write the same updates, except that :func:`_join_matrix` does not
    repeat those of a candidate that is both new and old (repeats are rejected on insertion anyway), so the lists do
    not depend on the choice. At 100k × 64, k = 64, the first join of a warm start took 3.0-3.3 s instead of 3.9 s
    (docs/BENCHMARKS.md, session 15)."""
    m = 0
    n = x.shape[0]
    k_last = nn_d.shape[1] - 1
    for u in range(lo, hi):
        nn = new_n[u]
        no = old_n[u]
        # The next point's candidate rows are requested now, so their memory latency overlaps this point's pairs.
        # Of a distance row only the last entry is read (the candidate's threshold).
        if u + 1 < n:
            for i in range(new_n[u + 1]):
                w = new_i[u + 1, i]
                prefetch_row(x, w)
                prefetch_item(nn_d, w, k_last)
                prefetch_row(nn_i, w)
            for i in range(old_n[u + 1]):
                w = old_i[u + 1, i]
                prefetch_row(x, w)
                prefetch_item(nn_d, w, k_last)
                prefetch_row(nn_i, w)
        if nn >= min_new:
            m = _join_matrix(x, nn_i, nn_d, u, new_i, new_n, old_i, old_n, out_a, out_b, out_d, m, slot, ids, thr,
                             listed, dr, blk, filt)  # fmt: skip
            continue
        for i in range(nn):
            a = new_i[u, i]
            m = _join_one(x, nn_i, nn_d, a, new_i[u], i + 1, nn, out_a, out_b, out_d, m)
            m = _join_one(x, nn_i, nn_d, a, old_i[u], 0, no, out_a, out_b, out_d, m)
    return m


@njit(**_OPTS)
def apply_range(nn_i, nn_d, nn_new, upd_a, upd_b, upd_d, counts, row_lo, row_hi):
    """Apply the updates of every buffer ``c`` (its first ``counts[c]`` entries of row ``c`` of ``upd_*``) whose target
    lies in ``row_lo .. row_hi-1``. Returns the number of list insertions."""
    n_ins = 0
    for c in range(counts.shape[0]):
        for t in range(counts[c]):
            a = upd_a[c, t]
            if row_lo <= a < row_hi:
                n_ins += _insert(nn_i, nn_d, nn_new, a, upd_b[c, t], upd_d[c, t])
    return n_ins


@njit(**_OPTS)
def init_range(x, init_i, lo, hi, nn_i, nn_d, nn_new, seen, stamp0, buf_i, buf_d):
    """Rows ``lo .. hi-1`` of the lists from candidate ids ``init_i`` (``(N, C)``, ``-1`` entries and repeats
    ignored, the point itself too): distances computed, the ``K`` nearest kept in ascending ``(distance, id)`` order,
    all flagged new; rows with fewer than ``K`` distinct candidates stay padded (``-1`` / ``inf``). Scratch: ``seen``
    ``(N,)`` int64 stamps, ``buf_i`` / ``buf_d`` ``(C,)``.

    The distinct candidates are sorted once (``O(C log C)`` per row): inserting them one by one into the sorted row
    shifted ``O(K)`` entries each, which made re-ranking last epoch's lists (C = K = 128) cost more than their
    distances. The rows are the same as :func:`_insert` would give: the ``K`` smallest ``(distance, id)``."""
    k = nn_i.shape[1]
    for p in range(lo, hi):
        st = stamp0 + p
        seen[p] = st
        c = 0
        for j in range(init_i.shape[1]):
            w = init_i[p, j]
            if w >= 0 and seen[w] != st:
                seen[w] = st
                buf_i[c] = w
                buf_d[c] = _pair(x, p, w)
                c += 1
        order = np.argsort(buf_d[:c])
        m = min(c, k)
        j = 0
        while j < m:  # ties in distance go by id, as in _insert (a run of equal distances may cross the cut)
            e = j + 1
            while e < c and buf_d[order[e]] == buf_d[order[j]]:
                e += 1
            for a in range(j + 1, e):
                b = a
                while b > j and buf_i[order[b - 1]] > buf_i[order[b]]:
                    t = order[b]
                    order[b] = order[b - 1]
                    order[b - 1] = t
                    b -= 1
            j = e
        for j in range(m):
            nn_i[p, j] = buf_i[order[j]]
            nn_d[p, j] = buf_d[order[j]]
            nn_new[p, j] = 1
        for j in range(m, k):
            nn_i[p, j] = -1
            nn_d[p, j] = np.inf
            nn_new[p, j] = 0
    return 0


@njit(**_OPTS)
def settle_range(prev_i, lo, hi, nn_i, nn_new, rank, shift):
    """Warm start, rows ``lo .. hi-1``: clear the new flag of every entry that was in the previous list (the first
    ``K'`` columns of ``prev_i``, in their old order) at a rank at most ``shift`` places from its rank now. Such an
    entry's neighbourhood was already joined last time and has barely changed; the rest stay new. ``rank`` is an
    ``(N,)`` scratch of ``-1`` (restored on return)."""
    kk = min(prev_i.shape[1], nn_i.shape[1])
    for p in range(lo, hi):
        for r in range(kk):
            w = prev_i[p, r]
            if w >= 0:
                rank[w] = r
        for j in range(nn_i.shape[1]):
            w = nn_i[p, j]
            if w >= 0 and rank[w] >= 0 and abs(rank[w] - j) <= shift:
                nn_new[p, j] = 0
        for r in range(kk):
            w = prev_i[p, r]
            if w >= 0:
                rank[w] = -1
    return 0


@njit(**_OPTS)
def expand_points(knn_i, knn_d, vertex_of, gptr, gmem, k, out_i, out_d):
    """Point-level ``k``-NN from vertex lists: point ``p``'s other duplicates first (distance 0), then the points of
    each listed vertex in list order (a vertex stands for its group ``gmem[gptr[v]:gptr[v + 1]]`` of identical
    points). Rows short of ``k`` are padded with ``-1`` / ``inf``."""
    for p in range(vertex_of.shape[0]):
        v = vertex_of[p]
        c = 0
        for m in range(gptr[v], gptr[v + 1]):
            q = gmem[m]
            if q != p and c < k:
                out_i[p, c] = q
                out_d[p, c] = 0.0
                c += 1
        for j in range(knn_i.shape[1]):
            u = knn_i[v, j]
            if c >= k or u < 0:
                break
            for m in range(gptr[u], gptr[u + 1]):
                if c >= k:
                    break
                out_i[p, c] = gmem[m]
                out_d[p, c] = knn_d[v, j]
                c += 1
        for j in range(c, k):
            out_i[p, j] = -1
            out_d[p, j] = np.inf
