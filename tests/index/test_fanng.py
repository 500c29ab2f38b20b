"""FanngIndex: graph invariants, reachability, recall against NumPy brute force, determinism, degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartmine.index.fanng import FanngIndex


def clustered(n: int, d: int, n_clusters: int, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Gaussian clusters around standard-normal centres, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32)


def brute_knn(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = ((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def downhill(x: np.ndarray, index: FanngIndex, target: int, start: int) -> int:
    """NumPy re-statement of naive downhill search over the index's graph."""
    cur, dcur = start, ((x[start] - x[target]) ** 2).sum()
    while cur != target:
        nb = index.out_edges(cur)
        if nb.size == 0:
            break
        dn = ((x[nb] - x[target]) ** 2).sum(axis=1)
        j = int(np.argmin(dn))
        if nb[j] == target or dn[j] < dcur:
            cur, dcur = int(nb[j]), dn[j]
        else:
            break
    return cur


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    allx = clustered(3200, 24, n_clusters=12)
    return allx[:3000], allx[3000:]


@pytest.fixture(scope="module")
def index(data) -> FanngIndex:
    return FanngIndex(seed=0).build(data[0])


def test_edges_sorted_and_not_occluded(data, index):
    x = index.vertex_vectors().astype(np.float64)
    assert index.n_vertices == data[0].shape[0]
    for v in range(index.n_vertices):
        e = index.out_edges(v)
        assert v not in e, "self loop"
        assert len(set(e.tolist())) == e.size, "repeated edge"
        lens = ((x[e] - x[v]) ** 2).sum(axis=1)
        assert np.all(np.diff(lens) >= -1e-4 * lens[1:]), f"edges of {v} not ascending"
        # u->a occludes u->b iff D(u,a) < D(u,b) and D(a,b) < D(u,b); no edge may be occluded by a shorter one.
        dab = ((x[e][:, None, :] - x[e][None, :, :]) ** 2).sum(-1)
        shorter = lens[:, None] < lens[None, :] * (1 - 1e-5)
        occludes = shorter & (dab < lens[None, :] * (1 - 1e-5))
        assert not occludes.any(), f"vertex {v} keeps an occluded edge"


def test_one_dimensional_occlusion_keeps_only_nearest_on_each_side():
    # On a line, u->v occludes every edge beyond v on the same side: at most the two adjacent points remain.
    x = np.random.default_rng(3).permutation(np.arange(200, dtype=np.float32) ** 1.3)[:, None]
    index = FanngIndex(refine=1, seed=1).build(x)
    order = np.argsort(x[:, 0])
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    vert = index.vertex_of  # vertex ids are internal (breadth-first order): map the points' neighbours to them
    for v in range(200):
        allowed = {int(vert[order[p]]) for p in (pos[v] - 1, pos[v] + 1) if 0 <= p < 200}
        assert set(index.out_edges(int(vert[v])).tolist()) <= allowed
    d, i = index.search(x[:20] + 0.25, 2)
    np.testing.assert_array_equal(i, brute_knn(x[:20] + 0.25, x, 2)[1])


def test_every_point_reachable_from_start(data, index):
    x = index.vertex_vectors()
    start = index.start_vertex
    centroid = x.mean(axis=0)
    assert start == int(np.argmin(((x - centroid) ** 2).sum(axis=1)))
    assert index.stats_["n_unreached_downhill"] == 0
    for v in range(0, index.n_vertices, 7):  # NumPy downhill on a sample (full pass is covered by the kernel stat)
        assert downhill(x, index, v, start) == v
    d, i = index.search(data[0], 1)
    np.testing.assert_array_equal(i[:, 0], np.arange(data[0].shape[0]))
    np.testing.assert_array_equal(d[:, 0], 0.0)


def test_search_recall_default_settings(data, index):
    x, q = data
    d, i = index.search(q, 10)
    truth_d, truth_i = brute_knn(q, x, 10)
    assert d.shape == (200, 10) and d.dtype == np.float32 and i.dtype == np.int64
    assert recall(i, truth_i) >= 0.95
    assert np.all(np.diff(d, axis=1) >= 0)
    # Reported distances are the true squared distances of the reported points.
    np.testing.assert_allclose(d, ((q[:, None, :] - x[i]) ** 2).sum(-1), rtol=1e-4, atol=1e-4)


def test_budget_override_trades_recall(data, index):
    x, q = data
    truth = brute_knn(q, x, 10)[1]
    low = recall(index.search(q, 10, budget=16)[1], truth)
    high = recall(index.search(q, 10, budget=2000)[1], truth)
    assert low < high
    assert high >= 0.99
    with pytest.raises(ValueError, match="budget"):
        index.search(q, 10, budget=0)


def test_neighbours_exclude_self_and_ascending(data, index):
    x = data[0]
    d, i = index.neighbours(8)
    assert d.shape == (3000, 8)
    assert not (i == np.arange(3000)[:, None]).any()
    assert np.all(np.diff(d, axis=1) >= 0)
    d_all = ((x[:300, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d_all[:, :300], np.inf)
    truth = np.argsort(d_all, axis=1)[:, :8]
    assert recall(i[:300], truth) >= 0.95


def test_deterministic_under_seed(data):
    x = data[0][:800]
    a = FanngIndex(seed=5).build(x)
    b = FanngIndex(seed=5).build(torch.from_numpy(x))
    for u, v in zip(a.csr(), b.csr(), strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.search(x[:50], 5)[1], b.search(x[:50], 5)[1])
    c = FanngIndex(seed=6).build(x)
    c_edges = c.csr()[1]  # the graph (and its statistics) exist from the first use on
    assert a.stats_["n_pairs"] != c.stats_["n_pairs"] or not np.array_equal(a.csr()[1], c_edges)


def test_duplicates_are_merged_and_returned():
    base = clustered(300, 8, 3, seed=2)
    x = np.concatenate([base, base[:40], base[:5]])  # rows 300..339 copy 0..39; 340..344 copy 0..4 again
    index = FanngIndex(seed=0).build(x)
    assert index.n_vertices == 300
    d, i = index.neighbours(2)
    for p in range(5):  # three copies: the two others at distance 0
        assert set(i[p].tolist()) == {300 + p, 340 + p}
        np.testing.assert_array_equal(d[p], 0.0)
    for p in range(5, 40):
        assert i[p, 0] == 300 + p and d[p, 0] == 0.0
        assert i[300 + p, 0] == p
    d, i = index.search(base[7:8], 2)
    assert set(i[0].tolist()) == {7, 307}


def test_full_budget_search_is_exact_with_duplicate_groups():
    """With a budget of every vertex the search visits them all, so it must return the brute-force k nearest points,
    duplicates included (the first point of a group comes from the packed row, the others from the group table)."""
    base = clustered(200, 6, 3, seed=5)
    x = np.concatenate([base, base[:30], base[:30]])
    index = FanngIndex(seed=0).build(x)
    queries = clustered(20, 6, 3, seed=6)
    d, i = index.search(queries, 12, budget=index.n_vertices)
    brute = ((queries[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(d, np.sort(brute, axis=1)[:, :12], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(brute, i, axis=1), d, rtol=1e-5, atol=1e-6)
    assert all(len(set(row)) == 12 for row in i.tolist())


def test_vertex_vectors_are_a_read_only_view():
    x = clustered(50, 4, 2, seed=1)
    index = FanngIndex(seed=0).build(x)
    v = index.vertex_vectors()
    assert v.shape == (50, 4) and not v.flags.writeable
    np.testing.assert_array_equal(np.sort(v, axis=0), np.sort(x, axis=0))


def test_all_identical_points():
    x = np.ones((6, 4), dtype=np.float32)
    index = FanngIndex().build(x)
    assert index.n_vertices == 1
    d, i = index.neighbours(5)
    for p in range(6):
        assert sorted(i[p].tolist()) == sorted(set(range(6)) - {p})
    np.testing.assert_array_equal(d, 0.0)


def test_single_point_and_bad_k():
    x = np.zeros((1, 3), dtype=np.float32)
    index = FanngIndex().build(x)
    d, i = index.search(np.ones((2, 3), dtype=np.float32), 1)
    np.testing.assert_array_equal(i, [[0], [0]])
    np.testing.assert_allclose(d, [[3.0], [3.0]])
    with pytest.raises(ValueError, match="k"):
        index.neighbours(1)
    with pytest.raises(ValueError, match="k"):
        index.search(x, 2)


def test_two_points():
    x = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    d, i = FanngIndex().build(x).neighbours(1)
    np.testing.assert_array_equal(i, [[1], [0]])
    np.testing.assert_allclose(d, [[1.0], [1.0]])


def test_bad_input():
    with pytest.raises(ValueError, match="target_success"):
        FanngIndex(target_success=0.0)
    with pytest.raises(ValueError, match="max_degree"):
        FanngIndex(max_degree=0)
    with pytest.raises(ValueError, match="search_budget"):
        FanngIndex(search_budget=-3)
    x = np.zeros((10, 2), dtype=np.float32)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FanngIndex().build(x)
    with pytest.raises(RuntimeError, match="build"):
        FanngIndex().search(np.zeros((1, 2), dtype=np.float32), 1)


def test_pair_limit_warns_and_still_searches(data):
    x = data[0][:500]
    with pytest.warns(RuntimeWarning, match="max_pairs"):
        index = FanngIndex(max_pairs=50, success_window=100).build(x)
        d, i = index.search(x[:10], 1)  # construction="nn_descent" builds the graph on first use
    # The reachability repair still lets every point find itself.
    np.testing.assert_array_equal(i[:, 0], np.arange(10))
