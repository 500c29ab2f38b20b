"""NN-descent's random-projection-forest start: trees against a NumPy restatement of their first split, leaf joins
against NumPy brute force over the leaf-mates, and the whole start's thread-count independence and recall."""

from __future__ import annotations

import numpy as np
import pytest
from knn_helpers import brute_neighbours, clustered, recall

from smartmine.index import _forest_kernels as FK
from smartmine.index import _knn_kernels as KK
from smartmine.index.knn_graph import forest_start, nn_descent


def _tree(x: np.ndarray, seed: int, leaf: int) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    order = np.empty(n, np.int32)
    starts = np.empty(n + 1, np.int32)
    leaves = FK.build_tree(x, seed, leaf, order, starts, np.empty((2, n + 1), np.int64), np.empty(n, np.int32))
    return order, starts[: leaves + 1]


@pytest.mark.parametrize("leaf", [1, 7, 50])
def test_tree_is_a_partition_into_small_leaves_whose_root_split_is_the_hyperplane(leaf):
    x = clustered(300, 6, 4, spread=0.3)
    order, starts = _tree(x, 5, leaf)
    np.testing.assert_array_equal(np.sort(order), np.arange(300))
    sizes = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == 300 and (sizes >= 1).all() and (sizes <= leaf).all()
    # The root split, restated: the two points the hash picks, the plane halfway between them.
    ia = int(KK._priority(5, 0, 300)) % 300
    ib = (ia + 1 + int(KK._priority(5, 300, 0)) % 299) % 300
    normal = x[ia].astype(np.float64) - x[ib]
    margin = x.astype(np.float64) @ normal - normal @ (x[ia].astype(np.float64) + x[ib]) / 2
    left = np.flatnonzero(margin > 0)
    assert 0 < left.size < 300 and np.abs(margin).min() > 1e-3  # no point near the plane: float32 agrees
    # Later splits only reorder within each side, so the left side fills the first positions.
    np.testing.assert_array_equal(np.sort(order[: left.size]), left)


def test_tree_of_identical_points_cuts_groups_in_the_middle():
    order, starts = _tree(np.ones((40, 3), np.float32), 0, 6)
    np.testing.assert_array_equal(np.sort(order), np.arange(40))
    assert (np.diff(starts) <= 6).all() and starts[-1] == 40


@pytest.mark.parametrize("k, leaf", [(7, 12), (40, 90)])
def test_forest_start_keeps_the_nearest_of_the_lists_and_all_leaf_mates(k, leaf):
    """After ``forest_start`` every list is the ``K`` smallest ``(distance, id)`` among its starting entries and the
    points sharing a leaf with it in any tree (NumPy brute force over that union), for any thread count. Leaves of 90
    with 3 starting entries per list send more than ``SORT_KEYS_FROM`` leaf-mates into one merge (the key sort);
    repeated points make ties in distance, broken by id."""
    assert leaf == 12 or leaf > FK.SORT_KEYS_FROM
    x = clustered(400, 5, 6, spread=0.4)
    x[1::40] = x[0::40]  # ten pairs of identical points
    n, trees, seed = 400, 3, 4
    init = np.random.default_rng(0).integers(0, n, size=(n, 3)).astype(np.int32)
    results = []
    for threads in (1, 3):
        nn_i = np.empty((n, k), np.int32)
        nn_d = np.empty((n, k), np.float32)
        nn_new = np.empty((n, k), np.uint8)
        KK.init_range(x, init, 0, n, nn_i, nn_d, nn_new, np.full(n, -1, np.int64), 0,
                      np.empty(3, np.int32), np.empty(3, np.float32))  # fmt: skip
        forest_start(x, nn_i, nn_d, nn_new, trees, leaf, seed, threads)
        results.append((nn_i.copy(), nn_d.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    cand = [set(init[p].tolist()) for p in range(n)]
    for t in range(trees):  # the same trees forest_start builds (its seeds, restated)
        order, starts = _tree(x, seed * 7_919 + t + 1, leaf)
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            mates = order[a:b].tolist()
            for p in mates:
                cand[p].update(mates)
    d_all = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    nn_i, nn_d = results[0]
    for p in range(n):
        c = np.array(sorted(cand[p] - {p}))
        best = c[np.lexsort((c, d_all[p, c]))][:k]
        assert nn_i[p, : best.size].tolist() == best.tolist(), p
        np.testing.assert_allclose(nn_d[p, : best.size], d_all[p, best], rtol=1e-5, atol=1e-6)


def test_nn_descent_from_a_forest_is_thread_independent_and_accurate():
    x = clustered(1500, 12, 10, spread=0.5)
    a = nn_descent(x, 10, seed=2, n_threads=1, n_trees=4, leaf_size=30)
    b = nn_descent(x, 10, seed=2, n_threads=3, n_trees=4, leaf_size=30)
    np.testing.assert_array_equal(a.idx, b.idx)
    assert recall(a.idx, brute_neighbours(x, 10)) >= 0.97
    start = nn_descent(x, 10, seed=2, n_trees=4, leaf_size=30, max_iters=0)
    blind = nn_descent(x, 10, seed=2, n_trees=0, max_iters=0)
    truth = brute_neighbours(x, 10)
    assert recall(start.idx, truth) > recall(blind.idx, truth) + 0.1  # the trees' leaves hold true neighbours


def test_bad_forest_arguments():
    x = clustered(50, 3, 2, spread=0.5)
    with pytest.raises(ValueError, match="n_trees"):
        nn_descent(x, 5, n_trees=-1)
    with pytest.raises(ValueError, match="leaf_size"):
        nn_descent(x, 5, n_trees=2, leaf_size=1)
