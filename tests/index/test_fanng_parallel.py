"""FanngIndex(construction="nn_descent") and warm starts (update): FANNG's graph invariants checked against NumPy
restatements, recall against brute force, thread-count independence, refused and fallen-back warm starts."""

from __future__ import annotations

import numpy as np
import pytest
from knn_helpers import assert_fanng_invariants, brute_neighbours, clustered, recall

from smartmine.index.exact import ExactIndex
from smartmine.index.fanng import FanngIndex

SPREAD = 0.4  # noise of the clustered test points


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(1200, 16, 8, spread=SPREAD)


@pytest.fixture(scope="module")
def index(data) -> FanngIndex:
    return FanngIndex(seed=0, knn_k=16).build(data)


def test_parallel_construction_keeps_fanng_invariants(index):
    assert index.construction == "nn_descent" and index.stats_["knn_iterations"] >= 1
    assert index.stats_["knn_candidates"] == 16
    assert_fanng_invariants(index)


def test_search_and_neighbours_recall(data, index):
    truth = brute_neighbours(data, 10)
    assert recall(index.search(data, 11)[1][:, 1:], truth) >= 0.9
    d, i = index.neighbours(10)
    assert recall(i, truth) >= 0.97
    assert not (i == np.arange(data.shape[0])[:, None]).any()
    np.testing.assert_allclose(d, ((data[:, None, :] - data[i]) ** 2).sum(-1), rtol=1e-4, atol=1e-5)
    # Longer lists than construction's: a further NN-descent from them.
    d, i = index.neighbours(24)
    assert recall(i, brute_neighbours(data, 24)) >= 0.97 and np.all(np.diff(d, axis=1) >= 0)


def test_graph_is_built_on_first_use_and_lists_need_none(data):
    index = FanngIndex(seed=0, knn_k=16).build(data)
    assert "n_pairs" not in index.stats_ and index.stats_["knn_iterations"] >= 1
    before = index.neighbours(16)  # the mining self-join: answered from the lists, no graph built
    assert "n_pairs" not in index.stats_
    index.search(data[:5], 3)
    assert "n_pairs" in index.stats_ and index.stats_["n_unreached_downhill"] == 0
    after = index.neighbours(16)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    # A warm start from an index whose graph was never built uses the lists alone, and keeps the invariants.
    lists_only = FanngIndex(seed=0, knn_k=16).build(data)
    lists_only.update(data + 0.01)
    assert lists_only.stats_["warm_start"] == 1.0
    assert_fanng_invariants(lists_only)


def test_independent_of_thread_count(data):
    a = FanngIndex(seed=2, knn_k=12, n_threads=1).build(data)
    b = FanngIndex(seed=2, knn_k=12, n_threads=3).build(data)
    for arr_a, arr_b in zip(a.csr(), b.csr(), strict=True):
        np.testing.assert_array_equal(arr_a, arr_b)
    np.testing.assert_array_equal(a.vertex_of, b.vertex_of)
    np.testing.assert_array_equal(a.neighbours(12)[1], b.neighbours(12)[1])


@pytest.mark.parametrize("rejoin_shift", [None, 1])
def test_warm_start_keeps_invariants_and_recall(data, rejoin_shift):
    # warm_accept_recall above 1: NN-descent runs whatever the drift (re-ranking alone is tested below).
    index = FanngIndex(seed=0, knn_k=16, warm_rejoin_shift=rejoin_shift, warm_accept_recall=2.0).build(data)
    moved = data + 0.03 * np.random.default_rng(5).normal(size=data.shape).astype(np.float32)
    index.update(moved)
    assert index.stats_["warm_start"] == 1.0 and index.stats_["drift_recall"] >= 0.3
    assert index.stats_["warm_joined"] == 1.0 and index.stats_["knn_iterations"] >= 1
    assert index.stats_["knn_candidates"] == 32  # a warm start samples twice a cold build's min(knn_k, 64)
    assert_fanng_invariants(index)
    np.testing.assert_array_equal(index.vertex_vectors()[index.vertex_of], moved)  # the new vectors are indexed
    assert recall(index.neighbours(16)[1], brute_neighbours(moved, 16)) >= 0.97


def test_warm_start_within_the_accepted_drift_re_ranks_the_reserve(data):
    """With a reserve, a small drift keeps last epoch's lists, re-ranked under the new points (no local join): every
    row holds the same points as before, ascending in the new distances, and its first knn_k entries are the true
    neighbours wherever the reserve held them."""
    index = FanngIndex(seed=0, knn_k=16, warm_reserve=16).build(data)
    prev = index.warm_lists()
    assert prev.shape == (1200, 32) and (prev >= 0).all()
    assert recall(index.neighbours(16)[1], brute_neighbours(data, 16)) >= 0.99
    moved = data + 0.03 * np.random.default_rng(5).normal(size=data.shape).astype(np.float32)
    index.update(moved)
    s = index.stats_
    assert s["warm_start"] == 1.0 and s["warm_joined"] == 0.0 and s["knn_iterations"] == 0.0
    assert s["drift_recall"] >= index.warm_accept_recall
    lists = index.warm_lists()
    assert all(set(a) == set(b) for a, b in zip(lists.tolist(), prev.tolist(), strict=True))
    d = ((moved[:, None, :].astype(np.float64) - moved[lists]) ** 2).sum(-1)
    assert np.all(np.diff(d, axis=1) >= -1e-4 * d[:, 1:])
    truth = brute_neighbours(moved, 16)
    held = np.array([np.isin(t, p).mean() for t, p in zip(truth, prev, strict=True)])
    found = np.array([np.isin(t, f).mean() for t, f in zip(truth, lists[:, :16], strict=True)])
    np.testing.assert_allclose(found, held)  # re-ranked, every held true neighbour is among the first knn_k
    assert_fanng_invariants(index)  # the graph (from the first knn_k entries) is still a FANNG graph


def test_warm_start_beyond_the_accepted_drift_runs_nn_descent(data):
    index = FanngIndex(seed=0, knn_k=16, warm_reserve=16).build(data)
    moved = data + 0.3 * np.random.default_rng(5).normal(size=data.shape).astype(np.float32)
    index.update(moved)
    s = index.stats_
    assert s["warm_start"] == 1.0 and s["warm_joined"] == 1.0 and s["knn_iterations"] >= 1
    assert 0.3 <= s["drift_recall"] < index.warm_accept_recall
    assert index.warm_lists().shape == (1200, 32)
    assert recall(index.neighbours(16)[1], brute_neighbours(moved, 16)) >= 0.97
    # Lists shorter than knn_k + warm_reserve (saved before a reserve was set) cannot be re-ranked into full ones.
    short = FanngIndex(seed=0, knn_k=16).build(data).warm_lists()
    widened = FanngIndex(seed=0, knn_k=16, warm_reserve=16).build_warm(moved, short)
    assert widened.stats_["warm_joined"] == 1.0 and widened.warm_lists().shape == (1200, 32)


def test_warm_iters_caps_the_warm_start_only(data):
    """warm_iters=1: a warm start runs one local join (lists better than the stale ones, not as good as converged
    ones), while cold builds of the same index still iterate to convergence."""
    moved = data + 0.3 * np.random.default_rng(5).normal(size=data.shape).astype(np.float32)
    truth = brute_neighbours(moved, 16)
    capped = FanngIndex(seed=0, knn_k=16, warm_iters=1, warm_accept_recall=2.0).build(data)
    cold_iters = capped.stats_["knn_iterations"]
    stale = recall(capped.warm_lists(), truth)
    capped.update(moved)
    assert cold_iters > 1 and capped.stats_["warm_start"] == 1.0 and capped.stats_["knn_iterations"] == 1.0
    assert_fanng_invariants(capped)
    full = FanngIndex(seed=0, knn_k=16, warm_accept_recall=2.0).build(data).update(moved)
    assert full.stats_["warm_start"] == 1.0 and full.stats_["knn_iterations"] > 1
    one, converged = recall(capped.neighbours(16)[1], truth), recall(full.neighbours(16)[1], truth)
    assert stale < one < converged, (stale, one, converged)
    # A cold build by the capped index (the lists are of other points) is not capped.
    other = np.ascontiguousarray(np.random.default_rng(9).permutation(moved))
    assert capped.update(other).stats_["warm_start"] == 0.0 and capped.stats_["knn_iterations"] > 1


def test_warm_start_of_other_points_is_refused_or_cold(data):
    index = FanngIndex(seed=0, knn_k=16).build(data)
    with pytest.raises(ValueError, match="same 1200 points"):
        index.update(data[:1000])
    with pytest.raises(ValueError, match="dimension"):
        index.update(np.ascontiguousarray(data[:, :8]))
    # Same shape but other points (rows shuffled: different ids): the drift check sees stale lists and builds cold,
    # giving exactly the graph a fresh build of those points gives.
    other = np.ascontiguousarray(data[np.random.default_rng(0).permutation(1200)])
    index.update(other)
    assert index.stats_["warm_start"] == 0.0 and index.stats_["drift_recall"] < 0.3
    fresh = FanngIndex(seed=0, knn_k=16).build(other)
    for arr_a, arr_b in zip(index.csr(), fresh.csr(), strict=True):
        np.testing.assert_array_equal(arr_a, arr_b)
    np.testing.assert_array_equal(index.neighbours(5)[1], fresh.neighbours(5)[1])


def test_update_before_build_and_traverse_add_are_cold_builds(data):
    small = data[:300]
    a = FanngIndex(seed=0, construction="traverse_add").update(small)
    b = FanngIndex(seed=0, construction="traverse_add").build(small)
    np.testing.assert_array_equal(a.csr()[1], b.csr()[1])
    a.update(small + 0.01)
    assert a.stats_["warm_start"] == 0.0
    exact = ExactIndex().update(small)  # every index accepts update (a cold build unless it can warm-start)
    np.testing.assert_array_equal(exact.neighbours(3)[1], brute_neighbours(small, 3))


def test_build_warm_from_saved_lists_repeats_update(data):
    # A resumed run has only the saved lists, not the index object: a fresh index warm-built from them must give
    # exactly what update() on the live index gives (mining never searches the graph, so update has no edges either).
    moved = data + 0.03 * np.random.default_rng(5).normal(size=data.shape).astype(np.float32)
    live = FanngIndex(seed=0, knn_k=16).build(data)
    live.neighbours(24)  # mining asks for longer lists than knn_k: they are what is saved
    saved = live.warm_lists()
    assert saved.shape == (1200, 24) and saved.dtype == np.int64
    np.testing.assert_array_equal(saved, live.neighbours(24)[1])  # point ids, no duplicates here
    live.update(moved)
    resumed = FanngIndex(seed=0, knn_k=16).build_warm(moved, saved.astype(np.int32))
    assert resumed.stats_["warm_start"] == 1.0 and resumed.size == 1200 and resumed.dim == data.shape[1]
    np.testing.assert_array_equal(resumed.neighbours(24)[1], live.neighbours(24)[1])
    assert_fanng_invariants(resumed)
    # None: a cold build, identical to build().
    cold = FanngIndex(seed=0, knn_k=16).build_warm(moved, None)
    assert cold.stats_["warm_start"] == 0.0
    np.testing.assert_array_equal(cold.neighbours(5)[1], FanngIndex(seed=0, knn_k=16).build(moved).neighbours(5)[1])


def test_build_warm_refuses_lists_of_other_points(data):
    index = FanngIndex(seed=0, knn_k=16)
    lists = FanngIndex(seed=0, knn_k=16).build(data).warm_lists()
    with pytest.raises(ValueError, match="1000 rows, but x has 1200 points"):
        index.build_warm(data, lists[:1000])
    with pytest.raises(ValueError, match=r"point ids must lie in \[-1, 1200\)"):
        index.build_warm(data, np.where(lists == lists.max(), 5000, lists))
    with pytest.raises(ValueError, match="integer array"):
        index.build_warm(data, lists.astype(np.float32))
    assert index.size == 0  # nothing was built by a refused call
    # Indexes that keep no lists: warm_lists is None and build_warm validates, then builds cold.
    exact = ExactIndex()
    with pytest.raises(ValueError, match="rows"):
        exact.build_warm(data[:300], lists)
    exact.build_warm(data[:300], lists[:300] % 300)
    assert exact.warm_lists() is None
    np.testing.assert_array_equal(exact.neighbours(3)[1], brute_neighbours(data[:300], 3))
    assert FanngIndex(construction="traverse_add").warm_lists() is None


def test_neighbours_with_duplicates_match_brute_force():
    base = clustered(300, 6, 3, seed=4, spread=SPREAD)
    x = np.concatenate([base, base[:40], base[:10]])  # 40 points twice, 10 three times
    index = FanngIndex(seed=0, knn_k=12).build(x)
    assert index.n_vertices == 300
    d, i = index.neighbours(6)
    assert not (i == np.arange(x.shape[0])[:, None]).any()
    true_d = np.sort(((x[:, None, :] - x[None]) ** 2).sum(-1) + np.diag(np.full(x.shape[0], np.inf)), axis=1)[:, :6]
    np.testing.assert_allclose(d, true_d, rtol=1e-4, atol=1e-5)  # distances as brute force (ids may tie)
    dup = np.flatnonzero((np.arange(x.shape[0]) < 40) | (np.arange(x.shape[0]) >= 300))
    assert np.all(d[dup, 0] == 0.0)


def test_bad_construction_options():
    with pytest.raises(ValueError, match="construction"):
        FanngIndex(construction="hnsw")
    with pytest.raises(ValueError, match="knn_k"):
        FanngIndex(knn_k=0)
    with pytest.raises(ValueError, match="warm_min_recall"):
        FanngIndex(warm_min_recall=0.0)
    with pytest.raises(ValueError, match="warm_reserve"):
        FanngIndex(warm_reserve=-1)
    with pytest.raises(ValueError, match="warm_candidates"):
        FanngIndex(warm_candidates=0)
    with pytest.raises(ValueError, match="warm_iters"):
        FanngIndex(warm_iters=0)
    with pytest.raises(ValueError, match="warm_accept_recall"):
        FanngIndex(warm_accept_recall=float("nan"))


def test_threads_searching_a_fresh_index_wait_for_the_lazy_graph(monkeypatch):
    # nn_descent builds the graph on first search. Slow that build down so a second thread arrives while it runs: it
    # must wait for the finished graph (same answers as one thread alone), and the graph is built exactly once.
    import threading
    import time

    x = clustered(600, 8, 6, seed=3, spread=SPREAD)
    q = clustered(40, 8, 6, seed=4, spread=SPREAD)
    reference = FanngIndex(seed=1, n_threads=1)
    reference.build(x)
    ref_d, ref_i = reference.search(q, 5)

    index = FanngIndex(seed=1, n_threads=1)
    index.build(x)
    builds = []
    original = FanngIndex._graph_stage

    def slow_stage(self, *args, **kwargs):
        builds.append(threading.get_ident())
        time.sleep(0.3)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FanngIndex, "_graph_stage", slow_stage)
    results, errors = {}, []

    def worker(name):
        try:
            results[name] = index.search(q, 5)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for i, t in enumerate(threads):
        t.start()
        if i == 0:
            time.sleep(0.05)  # the first thread is inside the slowed build when the others arrive
    for t in threads:
        t.join()
    assert not errors and len(builds) == 1
    for d, i in results.values():
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(d, ref_d, rtol=1e-6)


def _pruned_graph(data: np.ndarray):
    from smartmine.index.fanng_build import knn_prune_graph
    from smartmine.index.knn_graph import nn_descent

    lists = nn_descent(data, 8, seed=0)
    return knn_prune_graph(data, lists.idx, lists.sq_dist, 30, 1)


def test_random_pairs_in_batches_of_one_are_the_sequential_loop(data):
    """grow_random_pairs with batch=1 (each pair judged on the current graph) against a plain Python restatement of
    the paper's random-pair loop: same pairs, sliding-window stopping rule, Traverse-Add on every failure."""
    from smartmine.index import _fanng_kernels as K
    from smartmine.index.fanng_build import grow_random_pairs

    x = np.ascontiguousarray(data[:300])
    n, window, target, seed = x.shape[0], 50, 0.9, 4
    nbr, lens, deg = _pruned_graph(x)
    got_deg = deg.copy()
    got = grow_random_pairs(x, nbr.copy(), lens.copy(), got_deg, target, window, seed, 10**6, 10**6, 2, batch=1)

    rng = np.random.default_rng(seed)
    hist: list[int] = []
    need = int(np.ceil(target * window - 1e-9))
    stack = np.empty((64, 2), np.int32)
    si, sf = np.empty((2, nbr.shape[1]), np.int32), np.empty((2, nbr.shape[1]), np.float32)
    while not (len(hist) >= window and sum(hist[-window:]) >= need):
        v1 = int(rng.integers(0, n, size=1, dtype=np.int32)[0])
        v2 = int(rng.integers(0, n - 1, size=1, dtype=np.int32)[0])
        v2 += v2 >= v1
        u, _ = K._downhill(x, nbr, deg, v2, v1)
        hist.append(int(u == v2))
        if u != v2:
            nbr, lens, stack, si, sf, _, status = K._traverse_add(x, nbr, lens, deg, v1, v2, stack, si, sf, 10**6)
            assert status == K.STATUS_OK
    assert got[2] == len(hist) and got[5] == K.STATUS_OK
    assert got[3] == pytest.approx(sum(hist[-window:]) / window)
    assert len(hist) > window and sum(1 - h for h in hist) > 0  # the loop did repair something
    np.testing.assert_array_equal(got_deg, deg)
    w = deg.max()
    np.testing.assert_array_equal(got[0][:, :w], nbr[:, :w])


def test_random_pairs_in_batches_do_not_depend_on_the_thread_count(data):
    from smartmine.index.fanng_build import grow_random_pairs

    x = np.ascontiguousarray(data)
    runs = []
    for threads in (1, 3):
        nbr, lens, deg = _pruned_graph(x)
        nbr, lens, pairs, rate, _, status = grow_random_pairs(x, nbr, lens, deg, 0.95, 200, 1, 10**6, 10**6, threads,
                                                              batch=64)  # fmt: skip
        assert pairs > 64 and rate >= 0.95 and status == 0  # several batches, target reached
        runs.append((nbr[:, : deg.max()], deg, pairs))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
