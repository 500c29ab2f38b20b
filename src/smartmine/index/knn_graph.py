"""Approximate all-points k-NN lists by NN-descent (Dong, Charikar & Li, WWW 2011), parallel and deterministic.

:func:`nn_descent` returns every point's ``k`` nearest other points. It starts from the leaves of a forest of
random-projection trees (as pynndescent does: every pair of points sharing a leaf is offered to both lists, plus a
few random entries per list; :func:`forest_start`), or from caller-given candidates (a warm start: last epoch's
lists), and improves the lists by local joins until an iteration changes fewer than ``delta * N * k`` entries. The
kernels are in :mod:`smartmine.index._knn_kernels` and :mod:`smartmine.index._forest_kernels`; each join writes only
its own points' rows, so the result for a fixed seed does not depend on the thread count.

Points are processed in the leaf order of one more tree (:func:`spatial_order`; a memory-layout choice: the vectors
a join touches together then sit together); results are returned in the caller's order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from smartmine._threads import run_chunks
from smartmine.index import _forest_kernels as FK
from smartmine.index import _knn_kernels as KK


def spatial_order(x: np.ndarray, seed: int, leaf: int = 32) -> np.ndarray:
    """A permutation of the rows of ``x`` (``(N, D)`` float32) that puts nearby points close together: the leaf order
    of a random-projection tree (each level splits every group at the median of its projection on one random
    direction) down to groups of about ``leaf`` points. ``O(N D log(N / leaf))``, deterministic under ``seed``."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    group = np.zeros(n, dtype=np.int64)
    for _ in range(max(0, int(np.ceil(np.log2(max(n / leaf, 1.0)))))):
        proj = x @ rng.normal(size=x.shape[1]).astype(np.float32)
        order = np.lexsort((proj, group))
        g = group[order]
        lo = np.searchsorted(g, g, side="left")
        hi = np.searchsorted(g, g, side="right")
        new = np.empty(n, dtype=np.int64)
        new[order] = 2 * g + (np.arange(n) - lo >= (hi - lo) // 2)
        group = new
    return np.lexsort((np.arange(n), group))


def window_candidates(n: int, width: int) -> np.ndarray:
    """``(n, width)`` int32: for every position ``p`` of an order, the ``width`` positions around it (a window
    shifted inwards at both ends; ``p`` itself included, the kernels skip it)."""
    width = min(width, n)
    start = np.clip(np.arange(n) - width // 2, 0, n - width)
    return (start[:, None] + np.arange(width)[None, :]).astype(np.int32)


def run_rows(
    n_rows: int, threads: int, make_scratch: Callable[[], object], work: Callable[[int, int, object], int]
) -> int:
    """``sum(work(lo, hi, scratch))`` over row chunks of ``range(n_rows)`` on ``threads`` pool threads, each thread
    with its own ``make_scratch()``. Chunk bounds do not affect results of kernels that write only their own rows."""
    threads = max(1, min(threads, n_rows))
    chunk = max(1, min(4096, -(-n_rows // (8 * threads))))
    bounds = [(lo, min(n_rows, lo + chunk)) for lo in range(0, n_rows, chunk)]
    local = threading.local()

    def run(lo: int, hi: int) -> int:
        if not hasattr(local, "s"):
            local.s = make_scratch()
        return int(work(lo, hi, local.s))

    return sum(run_chunks(run, bounds, threads))


def random_candidates(n: int, width: int, seed: int) -> np.ndarray:
    """``(n, width)`` int32 uniform random ids (repeats and self allowed; the kernels skip them)."""
    return np.random.default_rng(seed).integers(0, n, size=(n, width), dtype=np.int32)


FOREST_RANDOM = 16  # random entries per starting list besides the forest's leaves
OUTPUT_ROWS = 1 << 16  # rows renumbered at once when the lists go back to the caller's order


def default_trees(n: int) -> int:
    """Trees of the forest start for ``n`` points: ``2 log10 n`` clipped to 3..12 (pynndescent's rule; 12 at 1M)."""
    return max(3, min(12, round(2.0 * np.log10(max(n, 2)))))


def default_leaf_size(k: int) -> int:
    """Largest leaf of the forest start for lists of ``k``: ``5 k`` clipped to 60..256 (pynndescent's rule)."""
    return max(60, min(256, 5 * k))


def forest_start(
    xs: np.ndarray,
    nn_i: np.ndarray,
    nn_d: np.ndarray,
    nn_new: np.ndarray,
    n_trees: int,
    leaf_size: int,
    seed: int,
    threads: int,
) -> int:
    """Improve the lists ``nn_i`` / ``nn_d`` / ``nn_new`` (``(N, K)``, as :func:`nn_descent` keeps them, of the rows
    of ``xs``) with the leaves of ``n_trees`` random-projection trees (leaves of at most ``leaf_size`` points; see
    :mod:`smartmine.index._forest_kernels`): every pair in a leaf is offered to both lists. Trees are built
    ``threads`` at a time, each tree's leaves joined in parallel; the lists do not depend on ``threads``. Returns the
    number of insertions."""
    n, k = nn_i.shape
    local = threading.local()  # each thread's scratch of the leaf joins

    def build(t: int, _: int) -> tuple[np.ndarray, np.ndarray, int]:
        order = np.empty(n, dtype=np.int32)
        starts = np.empty(n + 1, dtype=np.int32)
        stack = np.empty((2, n + 1), dtype=np.int64)
        leaves = FK.build_tree(xs, seed * 7_919 + t + 1, leaf_size, order, starts, stack, np.empty(n, dtype=np.int32))
        return order, starts, int(leaves)

    def join(lo: int, hi: int, order: np.ndarray, starts: np.ndarray) -> int:
        if not hasattr(local, "s"):
            local.s = (
                np.empty((leaf_size, leaf_size), dtype=np.float32),
                np.empty(leaf_size + 1, dtype=np.int32),
                np.empty(leaf_size + 1, dtype=np.float32),
                np.empty(k, dtype=np.int32),
                np.empty(k, dtype=np.float32),
                np.empty(k, dtype=np.uint8),
                np.empty(leaf_size, dtype=np.uint64),
            )
        return int(FK.join_leaves(xs, order, starts, lo, hi, nn_i, nn_d, nn_new, *local.s))

    inserted = 0
    for t0 in range(0, n_trees, threads):
        # Trees are independent: build one per thread, then join their leaves tree by tree (within one tree the
        # leaves are disjoint, so its leaves can be joined in parallel without two threads writing one row).
        for order, starts, leaves in run_chunks(build, [(t, t + 1) for t in range(t0, min(n_trees, t0 + threads))],
                                                threads):  # fmt: skip
            step = max(1, -(-leaves // (16 * threads)))
            bounds = [(lo, min(leaves, lo + step)) for lo in range(0, leaves, step)]
            inserted += sum(run_chunks(lambda lo, hi, o=order, s=starts: join(lo, hi, o, s), bounds, threads))
    return inserted


OFFER_BLOCK_SHIFT = 10  # candidate rows per block of the offer records: 1,024 (heaps of 512 KiB at S = 64)
OFFER_RECORDS_MAX = 1 << 25  # records buffered at once (256 MiB); more sources are taken in several slabs


def sample_candidates(
    nn_i: np.ndarray,
    nn_new: np.ndarray,
    seed: int,
    new: tuple[np.ndarray, np.ndarray, np.ndarray],
    old: tuple[np.ndarray, np.ndarray, np.ndarray],
    threads: int,
    shift: int = OFFER_BLOCK_SHIFT,
    records_max: int = OFFER_RECORDS_MAX,
) -> None:
    """Step 1 of an NN-descent iteration: fill the ``new`` and ``old`` candidate heaps (each ``(ids (N, S) int32,
    priorities (N, S) uint32, counts (N,) int32)``) from the lists ``nn_i`` ``(N, K)`` and their flags ``nn_new``,
    then clear the flag of every forward new entry that was sampled (see :mod:`smartmine.index._knn_kernels`).

    The offers are first written as ``(row, item)`` records grouped by blocks of ``2**shift`` rows, in the order of
    the scan over sources, then each block's records go to its heaps; a row therefore receives its offers in scan
    order whatever ``threads``, ``shift`` and ``records_max`` are, and the heaps are identical to offering each one
    straight away. Sources are taken in slabs of at most ``records_max`` records' worth (``2 K`` per source)."""
    n, k = nn_i.shape
    n_blocks = (n >> shift) + 1
    slab = max(1, records_max // (2 * k))
    rec = np.empty((2, 0), dtype=np.int32)  # (row, item) records, grown to the largest slab's
    block_step = max(1, -(-n_blocks // (8 * threads)))
    block_chunks = [(b, min(n_blocks, b + block_step)) for b in range(0, n_blocks, block_step)]
    each_range = [(t, t + 1) for t in range(threads)]
    for want_new, (ci, cp, cn) in ((1, new), (0, old)):
        cn[:] = 0
        for s0 in range(0, n, slab):
            s1 = min(n, s0 + slab)
            sources = [(s0 + (s1 - s0) * t // threads, s0 + (s1 - s0) * (t + 1) // threads) for t in range(threads)]
            counts = np.zeros((threads, n_blocks), dtype=np.int64)

            def count(t: int, _: int, want_new: int = want_new, counts=counts, sources=sources, rec=rec) -> int:
                lo, hi = sources[t]
                return int(KK.scan_offers(nn_i, nn_new, want_new, new[2], shift, lo, hi, counts[t], *rec, False))

            run_chunks(count, each_range, threads)
            # Block-major, source-range-minor: a block's records lie together, in scan order.
            starts = np.zeros(counts.size + 1, dtype=np.int64)
            np.cumsum(counts.T.reshape(-1), out=starts[1:])
            heads = starts[:-1].reshape(n_blocks, threads).T.copy()
            if starts[-1] > rec.shape[1]:
                rec = np.empty((2, int(starts[-1])), dtype=np.int32)

            def fill(t: int, _: int, want_new: int = want_new, heads=heads, sources=sources, rec=rec) -> int:
                lo, hi = sources[t]
                return int(KK.scan_offers(nn_i, nn_new, want_new, new[2], shift, lo, hi, heads[t], *rec, True))

            run_chunks(fill, each_range, threads)

            def take(b0: int, b1: int, ci=ci, cp=cp, cn=cn, starts=starts, rec=rec) -> int:
                return int(KK.take_offers(seed, ci, cp, cn, starts, threads, b0, b1, rec[0], rec[1]))

            run_chunks(take, block_chunks, threads)
    parts = [(n * t // threads, n * (t + 1) // threads) for t in range(threads)]
    # Only after every offer has been taken: the flags cleared here are read by the scans above.
    run_chunks(lambda lo, hi: int(KK.clear_sampled(nn_i, nn_new, seed, new[1], new[2], lo, hi)), parts, threads)


@dataclass
class KnnLists:
    """Result of :func:`nn_descent`: ``sq_dist`` ``(N, k)`` float32 ascending and ``idx`` ``(N, k)`` int64 (``-1`` /
    ``inf`` only where fewer than ``k`` other points exist), in the caller's point order; ``stats`` holds iterations,
    updates per iteration (``history``), distance-free counters and seconds (in all, per phase and per iteration)."""

    sq_dist: np.ndarray
    idx: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)


def local_joins(
    xs: np.ndarray,
    nn_i: np.ndarray,
    nn_d: np.ndarray,
    nn_new: np.ndarray,
    s_cap: int,
    max_iters: int,
    delta: float,
    seed: int,
    threads: int,
) -> tuple[list[int], list[float], float, float, float]:
    """NN-descent iterations on the lists ``(nn_i, nn_d, nn_new)`` (``(N, k)``, updated in place) of the points
    ``xs``: each samples up to ``s_cap`` new and old candidates per point and runs the local joins, until an iteration
    inserts at most ``delta * N * k`` entries or ``max_iters`` ran. Returns the insertions per iteration, the seconds
    per iteration, and the seconds of candidate sampling, of the joins and of their pair passes. Its buffers (at 1M
    points and 128 candidates about 2.6 GB) are freed when it returns, before the caller makes its output."""
    n, k = nn_i.shape
    new_i = np.empty((n, s_cap), dtype=np.int32)
    new_p = np.empty((n, s_cap), dtype=np.uint32)
    new_n = np.empty(n, dtype=np.int32)
    old_i = np.empty((n, s_cap), dtype=np.int32)
    old_p = np.empty((n, s_cap), dtype=np.uint32)
    old_n = np.empty(n, dtype=np.int32)
    history: list[int] = []
    per_iteration: list[float] = []
    t_cand = t_join = t_emit = 0.0
    chunk = 256  # points whose local joins fill one update buffer
    per_block = 2 * threads
    cap = KK.update_capacity(chunk, s_cap)
    upd_a = np.empty((per_block, cap), dtype=np.int32)
    upd_b = np.empty((per_block, cap), dtype=np.int32)
    upd_d = np.empty((per_block, cap), dtype=np.float32)
    counts = np.zeros(per_block, dtype=np.int64)
    # Scratch of join_range, one per update buffer (the calls that fill different buffers run at the same time).
    join_scratch = KK.join_scratch(per_block, n, s_cap, xs.shape[1])
    parts = [(n * t // threads, n * (t + 1) // threads) for t in range(threads)]
    for it in range(max_iters):
        t1 = time.perf_counter()
        it_seed = seed * 1_000_003 + it

        sample_candidates(nn_i, nn_new, it_seed, (new_i, new_p, new_n), (old_i, old_p, old_n), threads)
        t2 = time.perf_counter()
        updates = 0
        for b0 in range(0, n, chunk * per_block):
            bounds = [(lo, min(n, lo + chunk)) for lo in range(b0, min(n, b0 + chunk * per_block), chunk)]
            counts[:] = 0

            def emit(lo: int, hi: int, b0: int = b0) -> None:
                c = (lo - b0) // chunk
                counts[c] = KK.join_range(
                    xs, nn_i, nn_d, new_i, new_n, old_i, old_n, lo, hi, upd_a[c], upd_b[c], upd_d[c],
                    *(a[c] for a in join_scratch), KK.MATRIX_MIN_NEW,
                )  # fmt: skip

            t3 = time.perf_counter()
            run_chunks(emit, bounds, threads)
            t_emit += time.perf_counter() - t3

            def apply(lo: int, hi: int) -> int:
                return int(KK.apply_range(nn_i, nn_d, nn_new, upd_a, upd_b, upd_d, counts, lo, hi))

            updates += sum(run_chunks(apply, parts, threads))
        t_cand += t2 - t1
        t_join += time.perf_counter() - t2
        history.append(updates)
        per_iteration.append(time.perf_counter() - t1)
        if updates <= delta * n * k:
            break
    return history, per_iteration, t_cand, t_join, t_emit


def nn_descent(
    x: np.ndarray,
    k: int,
    init: np.ndarray | None = None,
    max_candidates: int | None = None,
    max_iters: int = 10,
    delta: float = 0.001,
    seed: int = 0,
    n_threads: int | None = None,
    order: np.ndarray | None = None,
    rejoin_shift: int | None = None,
    n_trees: int | None = None,
    leaf_size: int | None = None,
) -> KnnLists:
    """Approximate ``k`` nearest other points of every row of ``x``.

    Args:
        x: ``(N, D)`` float32, C-contiguous, finite (not checked here).
        k: list length, ``1 <= k < N``.
        init: optional ``(N, C)`` int candidate ids per point (``-1`` ignored; out-of-range ids are an error): the
            starting lists are the ``k`` nearest of them (a warm start; no forest is built). Default: the forest.
        max_candidates: ``S``, the new and the old candidates sampled per point per iteration (default
            ``min(k, 64)``). More: fewer iterations, more work per iteration (pairs per point grow as ``S²``). At
            100k × 64, k = 64, overlapping classes: S = 32 took 34.8 s for recall 0.952 (iteration cap reached),
            S = 64 28.0 s for 0.978 in 7 iterations, S = 96 37.5 s for 0.986 (docs/BENCHMARKS.md). At 1M the
            default stops at recall 0.89; S = 128 gave 0.931, S = 256 0.951, and longer lists with S = 128 more
            for their first 64 entries: ``k = 80`` 0.958 in 356-408 s (pynndescent, same settings: 0.959 in 385-464 s;
            two days), ``k = 95`` 0.972 (docs/BENCHMARKS.md, sessions 22-24).
        max_iters: iteration cap (default 10).
        delta: stop when an iteration inserts fewer than ``delta * N * k`` entries (default 0.001, the paper's).
        seed: seeds the tree and the candidate sampling.
        n_threads: threads of the joins (default ``numba.get_num_threads()``); results do not depend on it.
        order: optional processing order (a permutation of ``range(N)``); default the tree's leaf order.
        rejoin_shift: with ``init`` whose first ``k`` columns are the previous lists in their old order (a warm
            start): only entries that are new to a list or moved more than this many ranks take part in the first
            local join as new; the others were joined last time. ``None`` (default): every entry is new.
        n_trees: trees of the cold start's forest (default :func:`default_trees`: 3 to 12, 12 from 1M points);
            ``0``: the start of sessions 4-19 instead, the windows of the processing order's tree and ``k`` random
            entries per list. At 1M × 64, k = 64, overlapping classes, 12 trees took the whole run from 329 s to
            264 s at recall 0.893 instead of 0.880 (pynndescent: 239 s at 0.889; docs/BENCHMARKS.md, session 20).
        leaf_size: largest leaf of the forest (default :func:`default_leaf_size`: ``5 k`` clipped to 60..256).
    """
    t0 = time.perf_counter()
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k: expected 1 <= k < {n} (the number of points), got {k}")
    if n_trees is not None and n_trees < 0:
        raise ValueError(f"n_trees: expected >= 0 or None, got {n_trees}")
    if leaf_size is not None and leaf_size < 2:
        raise ValueError(f"leaf_size: expected >= 2 (a leaf pairs its points) or None, got {leaf_size}")
    threads = n_threads if n_threads is not None else numba.get_num_threads()
    perm = spatial_order(x, seed) if order is None else np.asarray(order, dtype=np.int64)
    # The identity order (FanngIndex's, whose vertices are already in tree order) needs no renumbering: at 100k
    # points and 128 candidates each, the copies of ids through the permutation took longer than the re-ranking.
    identity = bool(np.array_equal(perm, np.arange(n)))
    xs = np.ascontiguousarray(x) if identity else np.ascontiguousarray(x[perm])
    trees = default_trees(n) if n_trees is None else n_trees
    if init is None and trees > 0:
        # The forest supplies the neighbourhoods; a few random entries per list keep long-range links for the joins.
        # (The windows and k random entries of the start without a forest cost more on top of it and gave the same
        # recall and insertions per iteration at 100k and 1M: docs/BENCHMARKS.md, session 20.)
        cand = random_candidates(n, min(FOREST_RANDOM, n), seed)
    elif init is None:
        cand = np.concatenate([window_candidates(n, k + 1), random_candidates(n, k, seed)], axis=1)
    else:
        init = np.asarray(init)
        if init.ndim != 2 or init.shape[0] != n:
            raise ValueError(f"init: expected ({n}, C) candidate ids, got shape {init.shape}")
        if init.size and (init.max() >= n or init.min() < -1):
            raise ValueError(f"init: candidate ids must lie in [-1, {n - 1}]")
        # Rows follow the processing order, ids too.
        if identity:
            cand = init.astype(np.int32)
        else:
            pos = np.empty(n, dtype=np.int64)
            pos[perm] = np.arange(n)
            rows = init[perm]
            cand = np.where(rows >= 0, pos[np.maximum(rows, 0)], -1).astype(np.int32)
    nn_i = np.empty((n, k), dtype=np.int32)
    nn_d = np.empty((n, k), dtype=np.float32)
    nn_new = np.empty((n, k), dtype=np.uint8)

    def scratch() -> np.ndarray:
        return np.full(n, -1, dtype=np.int64)

    def init_rows(lo: int, hi: int, seen: np.ndarray) -> int:
        buf_i, buf_d = np.empty(cand.shape[1], dtype=np.int32), np.empty(cand.shape[1], dtype=np.float32)
        return KK.init_range(xs, cand, lo, hi, nn_i, nn_d, nn_new, seen, 0, buf_i, buf_d)

    run_rows(n, threads, scratch, init_rows)
    if init is None and trees > 0:
        forest_start(xs, nn_i, nn_d, nn_new, trees, default_leaf_size(k) if leaf_size is None else leaf_size, seed,
                     threads)  # fmt: skip
    if init is not None and rejoin_shift is not None:
        if rejoin_shift < 0:
            raise ValueError(f"rejoin_shift: expected >= 0 or None, got {rejoin_shift}")
        run_rows(n, threads, scratch, lambda lo, hi, s: KK.settle_range(cand, lo, hi, nn_i, nn_new, s, rejoin_shift))
    t_init = time.perf_counter() - t0

    s_cap = max(1, min(k, 64) if max_candidates is None else int(max_candidates))
    history, per_iteration, t_cand, t_join, t_emit = local_joins(
        xs, nn_i, nn_d, nn_new, s_cap, max_iters, delta, seed, threads
    )
    if identity:
        out_i, out_d = nn_i.astype(np.int64), nn_d
    else:
        out_i = np.empty((n, k), dtype=np.int64)
        out_d = np.empty((n, k), dtype=np.float32)
        for lo in range(0, n, OUTPUT_ROWS):  # renumbered in slices: no full-size int64 temporaries
            rows = nn_i[lo : lo + OUTPUT_ROWS]
            ids = perm[np.maximum(rows, 0)]
            ids[rows < 0] = -1
            out_i[perm[lo : lo + OUTPUT_ROWS]] = ids
            out_d[perm[lo : lo + OUTPUT_ROWS]] = nn_d[lo : lo + OUTPUT_ROWS]
    stats = {
        "iterations": float(len(history)),
        "candidates": float(s_cap),
        "updates_last": float(history[-1]) if history else 0.0,
        "history": history,
        "seconds_per_iteration": per_iteration,
        "seconds_init": t_init,
        "seconds_candidates": t_cand,
        "seconds_join": t_join,
        "seconds_join_pairs": t_emit,
        "seconds_total": time.perf_counter() - t0,
    }
    return KnnLists(out_d, out_i, stats)
