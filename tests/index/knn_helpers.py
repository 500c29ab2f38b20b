"""Data and references shared by the k-NN graph and FANNG construction tests (test_knn_graph.py,
test_fanng_parallel.py, test_fanng_insert.py)."""

from __future__ import annotations

import numpy as np

from smartmine.index.fanng import FanngIndex


def clustered(n: int, d: int, n_clusters: int, *, spread: float, seed: int = 0) -> np.ndarray:
    """``(n, d)`` float32 points around ``n_clusters`` standard-normal centres, Gaussian noise of std ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    return (centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def brute_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` ids of each point's ``k`` nearest other points by NumPy brute force (ties by index)."""
    d = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` that the same row of ``found`` holds."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def assert_fanng_invariants(index: FanngIndex) -> None:
    """Every vertex: no self loop, no repeat, edges ascending, none occluded by a shorter one; every vertex found by
    naive downhill search from the start vertex (NumPy restatements, independent of the kernels)."""
    x = index.vertex_vectors().astype(np.float64)
    for v in range(index.n_vertices):
        e = index.out_edges(v)
        assert v not in e and len(set(e.tolist())) == e.size
        lens = ((x[e] - x[v]) ** 2).sum(axis=1)
        assert np.all(np.diff(lens) >= -1e-4 * lens[1:])
        dab = ((x[e][:, None, :] - x[e][None, :, :]) ** 2).sum(-1)
        occludes = (lens[:, None] < lens[None, :] * (1 - 1e-5)) & (dab < lens[None, :] * (1 - 1e-5))
        assert not occludes.any(), f"vertex {v} keeps an occluded edge"
    start = index.start_vertex
    for target in range(index.n_vertices):
        cur, dcur = start, ((x[start] - x[target]) ** 2).sum()
        while cur != target:
            nb = index.out_edges(cur)
            dn = ((x[nb] - x[target]) ** 2).sum(axis=1)
            j = int(np.argmin(dn)) if nb.size else -1
            if j < 0 or not (nb[j] == target or dn[j] < dcur):
                break
            cur, dcur = int(nb[j]), dn[j]
        assert cur == target, f"vertex {target} not reached downhill from the start vertex"
