"""FanngIndex backtrack search against a pure-Python restatement: early termination (``search_ef``, beyond the
paper) and prefetching (``search_prefetch``, which must change no result)."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from smartmine.index.fanng import FanngIndex


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, d))
    return (centres[rng.integers(0, 8, n)] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def reference_search(index: FanngIndex, q: np.ndarray, k: int, budget: int, ef: int) -> tuple[list[int], int]:
    """Backtrack search restated with ``heapq``: a queue of (source distance, source, next edge position); pop the
    nearest source's next edge, visit its target if new, push the target with its shortest edge. With ``ef > 0``
    stop once the nearest queued source is farther than the ``ef``-th smallest vertex distance seen.
    Returns the k nearest visited vertices and the distance computations spent."""
    x = index.vertex_vectors().astype(np.float64)
    indptr, indices = index.csr()
    ef = max(ef, k) if ef > 0 else 0

    def dist(v: int) -> float:
        return float(((x[v] - q) ** 2).sum())

    s = index.start_vertex
    seen = {s: dist(s)}
    queue = [(seen[s], s, int(indptr[s]))] if indptr[s + 1] > indptr[s] else []
    while queue and len(seen) < budget:
        if ef and len(seen) >= ef and queue[0][0] > sorted(seen.values())[ef - 1]:
            break
        key, src, pos = heapq.heappop(queue)
        if pos + 1 < indptr[src + 1]:
            heapq.heappush(queue, (key, src, pos + 1))
        tgt = int(indices[pos])
        if tgt in seen:
            continue
        seen[tgt] = dist(tgt)
        if indptr[tgt + 1] > indptr[tgt]:
            heapq.heappush(queue, (seen[tgt], tgt, int(indptr[tgt])))
    best = sorted(seen, key=seen.get)[:k]
    return best, len(seen)


@pytest.fixture(scope="module")
def setup() -> tuple[FanngIndex, np.ndarray, np.ndarray]:
    allx = clustered(640, 8, seed=3)
    index = FanngIndex(seed=0, n_threads=1).build(allx[:600])
    return index, allx[:600], allx[600:]


@pytest.mark.parametrize("prefetch", [0, 6])
@pytest.mark.parametrize(("budget", "ef"), [(64, 0), (400, 10), (400, 24), (30, 40)])
def test_matches_the_python_restatement(setup, budget: int, ef: int, prefetch: int):
    index, _, queries = setup
    index.search_prefetch = prefetch
    try:
        _, found = index.search(queries, 5, budget=budget, ef=ef)
    finally:
        index.search_prefetch = None
    spent = index.last_distance_computations_
    point_of_vertex = np.argsort(index.vertex_of)  # no duplicates here: one point per vertex
    for row, q in enumerate(queries):
        vertices, n_dist = reference_search(index, q.astype(np.float64), 5, budget, ef)
        assert spent[row] == n_dist, row
        assert found[row].tolist() == point_of_vertex[vertices].tolist(), row


def test_small_ef_spends_less_and_large_ef_changes_nothing(setup):
    index, x, queries = setup
    budget = 600
    plain = index.search(queries, 10, budget=budget)
    spent_plain = index.last_distance_computations_.copy()
    huge = index.search(queries, 10, budget=budget, ef=len(x))  # the stop rule can never fire
    np.testing.assert_array_equal(plain[1], huge[1])
    early = index.search(queries, 10, budget=budget, ef=10)
    spent_early = index.last_distance_computations_
    assert spent_early.mean() < 0.5 * spent_plain.mean()
    truth = np.argsort(((queries[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    hits = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(early[1], truth, strict=True)])
    assert hits >= 0.9


def test_constructor_default_and_per_call_off(setup):
    index, x, queries = setup
    early = FanngIndex(seed=0, n_threads=1, search_ef=10, search_budget=600).build(x)
    a = early.search(queries, 10)
    spent_default = early.last_distance_computations_.copy()
    b = index.search(queries, 10, budget=600, ef=10)
    np.testing.assert_array_equal(a[1], b[1])
    early.search(queries, 10, ef=0)  # per call: off
    assert early.last_distance_computations_.mean() > spent_default.mean()


def test_bad_ef():
    with pytest.raises(ValueError, match="search_ef"):
        FanngIndex(search_ef=0)
    index = FanngIndex().build(clustered(50, 4, seed=0))
    with pytest.raises(ValueError, match="ef"):
        index.search(np.zeros((1, 4), np.float32), 3, ef=-1)


def test_prefetch_depth_follows_the_table_size_unless_set(setup):
    from smartmine.index import _fanng_kernels as K
    from smartmine.index._prefetch import prefetch_min_bytes

    index, _, _ = setup
    small = index._block
    large = np.broadcast_to(np.zeros(1, np.float32), (prefetch_min_bytes() // 64 + 1, 16))  # no memory behind it
    assert small.nbytes < prefetch_min_bytes() < large.nbytes
    assert (index._lookahead(small), index._lookahead(large)) == (0, K.LOOKAHEAD)
    assert FanngIndex(search_prefetch=3)._lookahead(small) == 3
    assert FanngIndex(search_prefetch=0)._lookahead(large) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_prefetch(bad):
    with pytest.raises(ValueError, match="search_prefetch"):
        FanngIndex(search_prefetch=bad)


def test_cache_size_from_sysfs(tmp_path):
    from smartmine.index._prefetch import FALLBACK_L2_BYTES, L2_MULTIPLE, cache_bytes

    for name, level, kind, size in [("index0", 1, "Data", "48K"), ("index1", 2, "Instruction", "64M"),
                                    ("index2", 2, "Unified", "2048K"), ("index3", 3, "Unified", "32M")]:  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "level").write_text(f"{level}\n")
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "size").write_text(size + "\n")
    assert cache_bytes(2, tmp_path) == 2 * 2**20  # the level-2 instruction entry does not count
    assert (cache_bytes(1, tmp_path), cache_bytes(3, tmp_path), cache_bytes(4, tmp_path)) == (48 * 2**10, 2**25, None)
    assert cache_bytes(2, tmp_path / "missing") is None
    (tmp_path / "index2" / "size").write_text("lots\n")
    assert cache_bytes(2, tmp_path) is None
    assert L2_MULTIPLE * FALLBACK_L2_BYTES == 32 * 2**20


def test_last_edges_are_marked_for_search():
    from smartmine.index._fanng_kernels import mark_last_edges

    indptr = np.array([0, 2, 2, 5, 6])  # vertex 1 has no edges
    indices = np.array([4, 1, 0, 3, 2, 0], dtype=np.int32)
    marked = mark_last_edges(indptr, indices)
    assert marked.tolist() == [4, -2, 0, 3, -3, -1]  # ~t = -t - 1 on each vertex's last edge
    assert indices.tolist() == [4, 1, 0, 3, 2, 0]  # a copy: the CSR graph is unchanged
