"""nn_descent: lists against NumPy brute force, list validity, thread-count independence, warm starts."""

from __future__ import annotations

import numpy as np
import pytest
from knn_helpers import brute_neighbours, clustered, recall

from smartmine.index.knn_graph import nn_descent, spatial_order, window_candidates

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


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="k:"):
        nn_descent(data, 1500)
    with pytest.raises(ValueError, match="init"):
        nn_descent(data, 5, init=np.zeros((10, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="init"):
        nn_descent(data, 5, init=np.full((1500, 5), 1500, dtype=np.int64))


def test_spatial_order_is_a_permutation_and_windows_stay_in_range():
    x = clustered(500, 4, 3, spread=SPREAD)
    perm = spatial_order(x, 0)
    np.testing.assert_array_equal(np.sort(perm), np.arange(500))
    w = window_candidates(10, 4)
    assert w.min() == 0 and w.max() == 9 and w.shape == (10, 4)
    assert all(i in row for i, row in enumerate(w.tolist()))
