"""FanngIndex(construction="insert"): the insertion kernels and the whole batched insertion against a pure-Python
restatement (on the kernels' own distance matrix, so float rounding cannot differ), FANNG's invariants after the full
construction, recall against brute force, and independence of the thread count."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from knn_helpers import assert_fanng_invariants, brute_neighbours, clustered, recall

from smartmine.index import _insert_kernels as KI
from smartmine.index._fanng_kernels import _sqdist
from smartmine.index.fanng import FanngIndex
from smartmine.index.fanng_insert import insert_graph, insertion_order, offers_by_target


def kernel_distances(x: np.ndarray) -> np.ndarray:
    """All squared distances as the kernels compute them."""
    n = x.shape[0]
    return np.array([[_sqdist(x, i, x, j) for j in range(n)] for i in range(n)], dtype=np.float32)


def ref_beam(dist, edges, q, start, width):
    """Best-first search restated with Python lists: pool of (distance, vertex, expanded), new entries after equal
    distances, truncated to ``width``; expand the first unexpanded entry until none is left."""
    seen = {q, start}
    pool = [[float(dist[start, q]), start, False]]
    while True:
        todo = [p for p in pool if not p[2]]
        if not todo:
            return [(p[1], p[0]) for p in pool]
        todo[0][2] = True
        for v in edges[todo[0][1]]:
            if v in seen:
                continue
            seen.add(v)
            at = bisect.bisect_right([p[0] for p in pool], float(dist[v, q]))
            pool.insert(at, [float(dist[v, q]), v, False])
            del pool[width:]


def ref_prune(dist, v, cands, keep):
    """FANNG's occlusion rule over ``cands`` (vertex, length) in the given order, at most ``keep``."""
    kept = []
    for c, lc in cands:
        if not any(le < lc and dist[e, c] < lc for e, le in kept):
            kept.append((c, lc))
            if len(kept) >= keep:
                break
    return kept


def ref_insert_graph(x, start, keep, width, seed, max_batch_fraction):
    """The batched insertion of :func:`insert_graph`, restated: searches of a batch on the graph before it, then its
    edges, then the reverse offers merged per target (current edges first on equal length) and re-pruned."""
    dist = kernel_distances(x)
    nv = x.shape[0]
    edges: list[list[tuple[int, float]]] = [[] for _ in range(nv)]
    order = insertion_order(nv, start, seed)
    done, size = 1, 1
    while done < nv:
        batch = [int(v) for v in order[done : done + size]]
        plain = [[e for e, _ in row] for row in edges]
        new = {q: ref_prune(dist, q, ref_beam(dist, plain, q, start, width), keep) for q in batch}
        offers: dict[int, list[tuple[float, int]]] = {}
        for q in batch:
            edges[q] = new[q]
            for t, lt in new[q]:
                offers.setdefault(t, []).append((lt, q))
        for t, got in offers.items():
            merged = sorted([(le, 0, i, e) for i, (e, le) in enumerate(edges[t])]
                            + [(lo, 1, src, src) for lo, src in sorted(got)])  # fmt: skip
            edges[t] = ref_prune(dist, t, [(e, le) for le, _, _, e in merged], keep)
        done += len(batch)
        size = min(2 * size, max(1, int(max_batch_fraction * nv)))
    return edges


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(1200, 16, 8, spread=0.4)


def test_beam_search_matches_the_restatement():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    x[7] = x[3]  # an exact tie
    dist = kernel_distances(x)
    deg = rng.integers(0, 7, size=80).astype(np.int32)
    nbr = np.full((80, 6), -1, dtype=np.int32)
    for v in range(80):
        nbr[v, : deg[v]] = rng.choice(np.delete(np.arange(80), v), size=min(deg[v], 6), replace=False)
    deg = np.minimum(deg, 6)
    mark = np.full(80, -1, np.int32)
    for width in (1, 4, 16):
        pool_i, pool_d, done = np.empty(width, np.int32), np.empty(width, np.float32), np.empty(width, np.uint8)
        for q in range(80):
            n, n_dist = KI._beam_search(x, nbr, deg, q, 0, width, pool_i, pool_d, done, mark, q + 1000 * width)
            want = ref_beam(dist, [nbr[v, : deg[v]].tolist() for v in range(80)], q, 0, width)
            assert [int(v) for v in pool_i[:n]] == [v for v, _ in want]
            assert n_dist >= n and np.all(done[:n] == 1)


def test_insert_range_and_reprune_prune_like_the_restatement():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    dist = kernel_distances(x)
    # A complete graph on vertices 0..29: the search of 35 finds its 12 nearest among them.
    nbr = np.full((40, 29), -1, dtype=np.int32)
    for v in range(30):
        nbr[v] = [w for w in range(30) if w != v]
    deg = np.array([29] * 30 + [0] * 10, dtype=np.int32)
    pts = np.array([35], dtype=np.int64)
    out_i, out_d, out_n = np.empty((1, 5), np.int32), np.empty((1, 5), np.float32), np.zeros(1, np.int32)
    scratch = (np.full(40, -1, np.int32), np.empty(12, np.int32), np.empty(12, np.float32), np.empty(12, np.uint8))
    KI.insert_range(x, nbr, deg, pts, 0, 1, 0, 12, 5, out_i, out_d, out_n, *scratch)
    nearest = sorted(range(30), key=lambda w: (dist[w, 35], w))[:12]
    want = ref_prune(dist, 35, [(w, dist[35, w]) for w in nearest], 5)
    assert [int(v) for v in out_i[0, : out_n[0]]] == [w for w, _ in want] and 0 < out_n[0] <= 5
    assert np.all(out_i[0, out_n[0] :] == -1)
    # Re-pruning: vertex 2's three edges merged with two offers, at most 4 kept.
    row = [(w, dist[2, w]) for w in sorted([5, 9, 11], key=lambda w: dist[2, w])]
    nbr2 = np.full((40, 4), -1, np.int32)
    lens2 = np.full((40, 4), np.inf, np.float32)
    for t, (w, lw) in enumerate(row):
        nbr2[2, t], lens2[2, t] = w, lw
    deg2 = np.zeros(40, np.int32)
    deg2[2] = 3
    offers = sorted([(dist[2, 31], 31), (dist[2, 33], 33)])
    KI.reprune_rows(x, nbr2, lens2, deg2, np.array([2]), np.array([0, 2]), np.array([o[1] for o in offers], np.int32),
                    np.array([o[0] for o in offers], np.float32), 0, 1, 4, np.empty(6, np.int32),
                    np.empty(6, np.float32))  # fmt: skip
    want = ref_prune(dist, 2, sorted(row + [(v, d) for d, v in offers], key=lambda c: c[1]), 4)
    assert [int(v) for v in nbr2[2, : deg2[2]]] == [w for w, _ in want]


def test_offers_are_grouped_by_target_shortest_first():
    pts = np.array([10, 11, 12])
    out_i = np.array([[3, 4, -1], [4, 3, 5], [4, -1, -1]], dtype=np.int32)
    out_d = np.array([[2.0, 1.0, 0], [1.0, 0.5, 9.0], [1.0, 0, 0]], dtype=np.float32)
    rows, ptr, offer_i, offer_d = offers_by_target(pts, out_i, out_d, np.array([2, 3, 1]))
    assert rows.tolist() == [3, 4, 5] and ptr.tolist() == [0, 2, 5, 6]
    assert offer_i.tolist() == [11, 10, 10, 11, 12, 11]  # target 4: lengths 1, 1, 1, ties by source id
    assert offer_d.tolist() == [0.5, 2.0, 1.0, 1.0, 1.0, 9.0]


@pytest.mark.parametrize("keep,width", [(4, 8), (30, 16)])
def test_insert_graph_is_the_restated_batched_insertion(keep, width):
    x = clustered(150, 6, 4, spread=0.5, seed=1)
    nbr, lens, deg, n_dist, n_batches = insert_graph(x, 17, keep, width, seed=5, threads=2, max_batch_fraction=0.1)
    want = ref_insert_graph(x, 17, keep, width, 5, 0.1)
    for v in range(150):
        assert [int(w) for w in nbr[v, : deg[v]]] == [w for w, _ in want[v]], f"vertex {v}"
        np.testing.assert_array_equal(lens[v, : deg[v]], np.array([lw for _, lw in want[v]], np.float32))
    assert n_batches == 4 + -(-(149 - 15) // 15) and n_dist > 0  # sizes 1, 2, 4, 8, then 15 per batch


def test_insert_construction_keeps_fanng_invariants_and_recall(data):
    index = FanngIndex(seed=0, construction="insert", build_ef=32).build(data)
    assert index.stats_["insert_batches"] > 0 and index.stats_["insert_distances"] > 0
    assert_fanng_invariants(index)
    truth = brute_neighbours(data, 10)
    assert recall(index.search(data, 11)[1][:, 1:], truth) >= 0.9
    d, i = index.neighbours(10)
    assert recall(i, truth) >= 0.9
    np.testing.assert_allclose(d, ((data[:, None, :] - data[i]) ** 2).sum(-1), rtol=1e-4, atol=1e-5)


def test_insert_construction_does_not_depend_on_the_thread_count(data):
    a = FanngIndex(seed=3, construction="insert", n_threads=1).build(data)
    b = FanngIndex(seed=3, construction="insert", n_threads=3).build(data)
    for arr_a, arr_b in zip(a.csr(), b.csr(), strict=True):
        np.testing.assert_array_equal(arr_a, arr_b)
    np.testing.assert_array_equal(a.search(data[:50], 5)[1], b.search(data[:50], 5)[1])


def test_insert_construction_edge_cases():
    one = FanngIndex(construction="insert").build(np.ones((5, 3), np.float32))  # duplicates: one vertex
    assert one.n_vertices == 1 and one.search(np.ones((1, 3), np.float32), 5)[1].tolist() == [[0, 1, 2, 3, 4]]
    two = FanngIndex(construction="insert").build(np.eye(2, dtype=np.float32))
    assert two.search(np.eye(2, dtype=np.float32), 1)[1].ravel().tolist() == [0, 1]
    with pytest.raises(ValueError, match="build_ef"):
        FanngIndex(construction="insert", build_ef=0)
