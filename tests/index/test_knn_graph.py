"""nn_descent: lists against NumPy brute force, list validity, thread-count independence, warm starts."""

from __future__ import annotations

import numpy as np
import pytest
from knn_helpers import brute_neighbours, clustered, recall

from smartmine.index.knn_graph import nn_descent, sample_candidates, spatial_order, window_candidates

SPREAD = 0.5  # noise of the clustered test points


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(1500, 12, 10, spread=SPREAD)


def test_recall_and_valid_lists(data):
    k = 10
    res = nn_descent(data, k, seed=0, n_threads=2)
    assert res.idx.shape == (1500, k) and res.idx.dtype == np.int64 and res.sq_dist.dtype == np.float32
    assert recall(res.idx, brute_neighbours(data, k)) >= 0.97
    assert not (res.idx == np.arange(1500)[:, None]).any(), "a point lists itself"
    assert all(len(set(row)) == k for row in res.idx.tolist()), "repeated neighbour"
    assert np.all(np.diff(res.sq_dist, axis=1) >= 0)
    true_d = ((data[:, None, :] - data[res.idx]) ** 2).sum(-1)
    np.testing.assert_allclose(res.sq_dist, true_d, rtol=1e-4, atol=1e-5)


def test_independent_of_thread_count(data):
    a = nn_descent(data, 8, seed=3, n_threads=1)
    b = nn_descent(data, 8, seed=3, n_threads=3)
    np.testing.assert_array_equal(a.idx, b.idx)
    np.testing.assert_array_equal(a.sq_dist, b.sq_dist)


@pytest.mark.parametrize("output_rows", [7, 1 << 16])
def test_lists_come_back_in_the_callers_order(data, monkeypatch, output_rows):
    """With a processing order, the lists are those of the same run on the permuted points, ids and rows mapped back
    through the permutation, whatever the slices the renumbering takes."""
    from smartmine.index import knn_graph

    monkeypatch.setattr(knn_graph, "OUTPUT_ROWS", output_rows)
    perm = spatial_order(data, 0)
    got = nn_descent(data, 10, seed=0, order=perm, n_threads=2)
    inner = nn_descent(np.ascontiguousarray(data[perm]), 10, seed=0, order=np.arange(data.shape[0]), n_threads=2)
    want_i, want_d = np.empty_like(inner.idx), np.empty_like(inner.sq_dist)
    want_i[perm], want_d[perm] = perm[inner.idx], inner.sq_dist
    np.testing.assert_array_equal(got.idx, want_i)
    np.testing.assert_array_equal(got.sq_dist, want_d)


def test_warm_start_from_exact_lists_stays_exact(data):
    truth = brute_neighbours(data, 8)
    res = nn_descent(data, 8, init=truth, seed=0)
    # Lists only ever improve: starting from the exact ones, nothing changes (ties aside, there are none here).
    np.testing.assert_array_equal(np.sort(res.idx, axis=1), np.sort(truth, axis=1))
    assert res.stats["iterations"] == 1


def test_warm_start_after_drift_recovers(data):
    moved = data + 0.05 * np.random.default_rng(1).normal(size=data.shape).astype(np.float32)
    prev = nn_descent(data, 10, seed=0).idx
    res = nn_descent(np.ascontiguousarray(moved), 10, init=prev, seed=0)
    assert recall(res.idx, brute_neighbours(moved, 10)) >= 0.97


@pytest.mark.parametrize("shift", [0, 1])
def test_warm_start_that_rejoins_only_moved_entries_recovers(data, shift):
    moved = np.ascontiguousarray(data + 0.05 * np.random.default_rng(1).normal(size=data.shape).astype(np.float32))
    prev = nn_descent(data, 10, seed=0).idx
    res = nn_descent(moved, 10, init=prev, seed=0, rejoin_shift=shift, n_threads=1)
    assert recall(res.idx, brute_neighbours(moved, 10)) >= 0.95
    again = nn_descent(moved, 10, init=prev, seed=0, rejoin_shift=shift, n_threads=3)
    np.testing.assert_array_equal(res.idx, again.idx)


def test_settle_range_clears_only_entries_that_kept_their_rank():
    from smartmine.index import _knn_kernels as KK

    rng = np.random.default_rng(0)
    n, k, shift = 40, 6, 1
    prev = np.stack([rng.permutation(np.delete(np.arange(n), p))[:k] for p in range(n)]).astype(np.int32)
    prev[3, 4:] = -1  # a short previous list
    # The current lists: each previous list shuffled a little, and one id swapped for a newcomer.
    now = prev.copy()
    for p in range(n):
        a, b = rng.integers(0, k, size=2)
        now[p, [a, b]] = now[p, [b, a]]
    now[5, 2] = np.setdiff1d(np.arange(n), np.append(prev[5], 5))[0]
    now[3, 4:] = [7, 8] if 7 not in prev[3] and 8 not in prev[3] else now[3, 4:]
    flags = np.ones((n, k), dtype=np.uint8)
    rank = np.full(n, -1, dtype=np.int64)
    KK.settle_range(prev, 0, n, now, flags, rank, shift)
    expected = np.ones((n, k), dtype=np.uint8)
    for p in range(n):
        old = {int(w): r for r, w in enumerate(prev[p]) if w >= 0}
        for j, w in enumerate(now[p]):
            if w >= 0 and int(w) in old and abs(old[int(w)] - j) <= shift:
                expected[p, j] = 0
    np.testing.assert_array_equal(flags, expected)
    assert (rank == -1).all()  # the scratch is restored


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="k:"):
        nn_descent(data, 1500)
    with pytest.raises(ValueError, match="init"):
        nn_descent(data, 5, init=np.zeros((10, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="init"):
        nn_descent(data, 5, init=np.full((1500, 5), 1500, dtype=np.int64))
    with pytest.raises(ValueError, match="rejoin_shift"):
        nn_descent(data, 5, init=brute_neighbours(data, 5), rejoin_shift=-1)


def test_spatial_order_is_a_permutation_and_windows_stay_in_range():
    x = clustered(500, 4, 3, spread=SPREAD)
    perm = spatial_order(x, 0)
    np.testing.assert_array_equal(np.sort(perm), np.arange(500))
    w = window_candidates(10, 4)
    assert w.min() == 0 and w.max() == 9 and w.shape == (10, 4)
    assert all(i in row for i, row in enumerate(w.tolist()))


def test_candidate_sampling_matches_a_numpy_rederivation_for_any_split():
    """sample_candidates (offers buffered by row block, in source slabs, on several threads) against the
    definition: each row's new (old) candidates are the S offers of smallest hash priority among its new (old) forward
    entries and the reverse of everybody's new (old) entries that point to it, old ones only for rows that have new
    ones (the join never reads the others); a forward new entry loses its flag iff sampled."""
    from smartmine.index import _knn_kernels as KK

    rng = np.random.default_rng(5)
    n, k, s, seed = 40, 6, 4, 77
    nn_i = np.stack([rng.choice(np.delete(np.arange(n), v), size=k, replace=False) for v in range(n)]).astype(np.int32)
    nn_i[3, 4:] = -1  # padding is skipped
    nn_i[nn_i[:, 0], 1] = np.arange(n)  # many mutual pairs
    flags = ((rng.random((n, k)) < 0.5) & (nn_i >= 0)).astype(np.uint8)  # padding is never new
    flags[7] = 0  # row 7 gets no new candidate (neither forward nor reverse), so no old ones either
    flags[nn_i == 7] = 0

    # A mutual pair offers each end twice (forward and reverse): the heap keeps one copy.
    offers: dict[str, list[set]] = {"new": [set() for _ in range(n)], "old": [set() for _ in range(n)]}
    for v in range(n):
        for j in range(k):
            u = int(nn_i[v, j])
            if u >= 0:
                kind = "new" if flags[v, j] else "old"
                offers[kind][v].add(u)
                offers[kind][u].add(v)

    def sampled(kind: str, v: int) -> list:
        if kind == "old" and not offers["new"][v]:
            return []
        return sorted(sorted(offers[kind][v], key=lambda w: int(KK._priority(seed, v, w)))[:s])

    assert not offers["new"][7] and offers["old"][7]  # the case is present

    # One thread, one block, one slab; three threads, blocks of 4 rows, slabs of 5 sources (the last one partial);
    # two threads, one block per row, slabs of 3 sources.
    for bounds in ((1, 10, 10**6), (3, 2, 2 * k * 5), (2, 0, 2 * k * 3)):
        threads, shift, records_max = bounds
        nn_new = flags.copy()
        heaps = [np.empty((n, s), np.int32), np.empty((n, s), np.uint32), np.full(n, 99, np.int32)]
        olds = [np.empty((n, s), np.int32), np.empty((n, s), np.uint32), np.full(n, 99, np.int32)]
        sample_candidates(nn_i, nn_new, seed, tuple(heaps), tuple(olds), threads, shift, records_max)
        for v in range(n):
            assert sorted(heaps[0][v, : heaps[2][v]].tolist()) == sampled("new", v), (bounds, v)
            assert sorted(olds[0][v, : olds[2][v]].tolist()) == sampled("old", v), (bounds, v)
            for j in range(k):
                if flags[v, j]:
                    assert nn_new[v, j] == (0 if int(nn_i[v, j]) in sampled("new", v) else 1), (bounds, v, j)


@pytest.mark.parametrize("min_new", [0, 10**6])
@pytest.mark.parametrize("s", [24, 70, 140])
def test_local_join_writes_the_updates_of_a_numpy_rederivation(min_new, s):
    """Both paths of ``join_range`` (a table of listed pairs for points with many new candidates, a scan per pair
    otherwise) against the rule restated in NumPy: every pair of a point's candidates with a new end, each way where
    the distance is within the target's last entry and the other point is not in its list yet. ``s = 70``: up to
    140 candidates per point, beyond the two register words of the table (128 slots); ``s = 140``: up to 280, beyond
    what one byte per slot could number."""
    from smartmine.index import _knn_kernels as KK

    rng = np.random.default_rng(5)
    n, dim, k = 300, 6, 7
    x = rng.normal(size=(n, dim)).astype(np.float32)
    d_all = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    nn_i = np.empty((n, k), dtype=np.int32)
    nn_d = np.empty((n, k), dtype=np.float32)
    for p in range(n):  # k random other points per list, ascending
        row = rng.choice(np.delete(np.arange(n), p), size=k, replace=False)
        row = row[np.argsort(d_all[p, row])]
        nn_i[p], nn_d[p] = row, d_all[p, row]
    new_i = np.full((n, s), -1, dtype=np.int32)
    old_i = np.full((n, s), -1, dtype=np.int32)
    new_n = rng.integers(0, s + 1, size=n).astype(np.int32)
    old_n = rng.integers(0, s + 1, size=n).astype(np.int32)
    new_n[::3] = old_n[::3] = s  # every third point full: 2s candidates
    for u in range(n):
        new_i[u, : new_n[u]] = rng.choice(n, size=new_n[u], replace=False)
        # Old candidates may repeat new ones, and u itself; a full point's do not (2s distinct candidates).
        pool = np.setdiff1d(np.arange(n), new_i[u, : new_n[u]]) if u % 3 == 0 else np.arange(n)
        old_i[u, : old_n[u]] = rng.choice(pool, size=old_n[u], replace=False)
    cap = 2 * n * (s * s + s * s) + 2
    out_a, out_b = np.empty(cap, dtype=np.int32), np.empty(cap, dtype=np.int32)
    out_d = np.empty(cap, dtype=np.float32)
    m = KK.join_range(
        x, nn_i, nn_d, new_i, new_n, old_i, old_n, 0, n, out_a, out_b, out_d,
        *(a[0] for a in KK.join_scratch(1, n, s, x.shape[1])), min_new,
    )  # fmt: skip
    got = set(zip(out_a[:m].tolist(), out_b[:m].tolist(), strict=True))
    np.testing.assert_allclose(out_d[:m], d_all[out_a[:m], out_b[:m]], rtol=1e-5, atol=1e-6)
    want = set()
    last = nn_d[:, k - 1]
    in_list = np.zeros((n, n), dtype=bool)
    in_list[np.arange(n)[:, None], nn_i] = True
    for u in range(n):
        new, old = new_i[u, : new_n[u]], old_i[u, : old_n[u]]
        upper = np.triu(np.ones((new.size, new.size), dtype=bool), 1)
        a = np.concatenate([np.broadcast_to(new[:, None], upper.shape)[upper], np.repeat(new, old.size)])
        b = np.concatenate([np.broadcast_to(new[None, :], upper.shape)[upper], np.tile(old, new.size)])
        a, b = a[a != b], b[a != b]
        for t, w in ((a, b), (b, a)):
            keep = (d_all[t, w] <= last[t]) & ~in_list[t, w]
            want.update(zip(t[keep].tolist(), w[keep].tolist(), strict=True))
    assert want and got == want


def test_both_local_join_paths_give_identical_lists(data, monkeypatch):
    """The lists do not depend on which local-join path a point takes (cold and warm, list length above the switch)."""
    from smartmine.index import _knn_kernels as KK

    moved = np.ascontiguousarray(data + 0.05 * np.random.default_rng(1).normal(size=data.shape).astype(np.float32))
    runs = []
    for min_new in (0, 10**6):
        monkeypatch.setattr(KK, "MATRIX_MIN_NEW", min_new)
        cold = nn_descent(data, 40, seed=0, n_threads=2)
        warm = nn_descent(moved, 40, init=cold.idx, seed=0, n_threads=2)
        runs.append((cold, warm))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a.idx, b.idx)
        np.testing.assert_array_equal(a.sq_dist, b.sq_dist)
    assert recall(runs[0][1].idx, brute_neighbours(moved, 40)) >= 0.97
    assert all(len(set(row)) == 40 for row in runs[0][1].idx.tolist()), "repeated neighbour"


def test_initial_lists_are_the_nearest_candidates_in_distance_then_id_order():
    """``init_range`` against NumPy: the ``K`` smallest ``(distance, id)`` of each row's distinct candidates (the point
    itself, ``-1`` and repeats ignored), ties in distance from duplicated points broken by id, short rows padded."""
    from smartmine.index import _knn_kernels as KK

    rng = np.random.default_rng(2)
    base = rng.normal(size=(20, 5)).astype(np.float32)
    x = np.ascontiguousarray(base[rng.integers(0, 20, size=60)])  # many exact duplicates: distance ties
    n, k, c = 60, 9, 14
    init = rng.integers(-1, n, size=(n, c)).astype(np.int32)
    init[3, :] = -1  # a row without candidates
    init[4, :] = [4, 7, 7, -1] + [4] * (c - 4)  # itself and one repeated candidate
    nn_i = np.empty((n, k), dtype=np.int32)
    nn_d = np.empty((n, k), dtype=np.float32)
    nn_new = np.empty((n, k), dtype=np.uint8)
    seen = np.full(n, -1, dtype=np.int64)
    KK.init_range(x, init, 0, n, nn_i, nn_d, nn_new, seen, 0, np.empty(c, np.int32), np.empty(c, np.float32))
    d_all = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    for p in range(n):
        cand = np.unique(init[p][(init[p] >= 0) & (init[p] != p)])
        order = np.lexsort((cand, d_all[p, cand]))[:k]
        m = order.size
        assert nn_i[p, :m].tolist() == cand[order].tolist(), p
        np.testing.assert_allclose(nn_d[p, :m], d_all[p, cand[order]], rtol=1e-5, atol=1e-6)
        assert (nn_i[p, m:] == -1).all() and np.isinf(nn_d[p, m:]).all()
        assert nn_new[p, :m].all() and not nn_new[p, m:].any()
    assert (nn_i[3] == -1).all() and nn_i[4, 0] == 7 and (nn_i[4, 1:] == -1).all()
