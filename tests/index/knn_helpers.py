"""Data and references shared by the k-NN graph tests (test_knn_graph.py, test_fanng_parallel.py)."""

from __future__ import annotations

import numpy as np


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
