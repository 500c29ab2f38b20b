"""κ thresholds t_a and the κ that fills a plan, against hand-computed values and a NumPy re-derivation."""

from __future__ import annotations

import numpy as np
import pytest

from smartmine.smart.selection import select_triplets
from smartmine.smart.thresholds import KappaThresholds, kappa_for_share, kappa_thresholds

INF = np.inf


def test_hand_built_lists_strict():
    # Classes: 0 0 0 1 1 2 (point 5 is a class with one image).
    labels = np.array([0, 0, 0, 1, 1, 2])
    idx = np.array([
        [1, 3, 2, -1],  # x+NN = 1 (D² 1), farthest negative 3 (D² 4)           -> t = 4
        [0, 2, 4, 5],   # x+NN = 0 (D² 0: duplicate), negatives farther          -> t = inf
        [3, 5, -1, -1],  # no positive listed                                    -> t = 0
        [4, 0, 1, 2],   # x+NN = 4 (D² 2), farthest negative 2 (D² 9)           -> t = 4.5
        [3, 0, -1, -1],  # x+NN = 3 (D² 3), negative 0 (D² 6)                    -> t = 2
        [0, 3, -1, -1],  # single-image class: no positive                       -> t = 0
    ])
    d2 = np.array([
        [1.0, 4.0, 5.0, INF],
        [0.0, 1.0, 2.0, 3.0],
        [1.0, 2.0, INF, INF],
        [2.0, 3.0, 5.0, 9.0],
        [3.0, 6.0, INF, INF],
        [1.0, 2.0, INF, INF],
    ])
    th = kappa_thresholds(idx, d2, labels, "strict")
    np.testing.assert_array_equal(th.values, [4.0, INF, 0.0, 4.5, 2.0, 0.0])
    np.testing.assert_array_equal(th.weights, np.ones(6))
    # Share with a valid negative at κ: t > κ.
    assert th.share_above(3.0) == pytest.approx(3 / 6)
    assert th.share_above(1.0) == pytest.approx(4 / 6)
    # Largest κ that leaves half the anchors a valid negative: just below 4 (t = inf, 4.5, 4).
    assert kappa_for_share(th, 0.5) == pytest.approx(4.0, rel=1e-6) and kappa_for_share(th, 0.5) < 4.0
    assert kappa_for_share(th, 1 / 6) == np.inf  # the duplicate anchor alone: any κ
    assert kappa_for_share(th, 5 / 6) == 0.0  # two anchors can never be mined
    # Those thresholds agree with what Algorithm 1 itself finds on the same lists.
    rng = np.random.default_rng(0)
    for kappa in (0.5, 1.9, 2.1, 4.2, 100.0):
        sel = select_triplets(idx, d2, labels, kappa, rng)
        np.testing.assert_array_equal(sel.num_valid_negatives > 0, th.values > kappa)


def test_semihard_thresholds_are_per_positive_and_weighted():
    labels = np.array([0, 0, 0, 1])
    idx = np.array([[1, 2, 3], [0, 3, 2], [3, 0, 1], [0, 1, 2]])
    d2 = np.array([[1.0, 2.0, 8.0], [1.0, 3.0, 4.0], [1.0, 2.0, 4.0], [8.0, 3.0, 1.0]])
    th = kappa_thresholds(idx, d2, labels, "semihard")
    # Anchor 0: positives 1 (D² 1), 2 (D² 2), farthest negative 3 (D² 8) -> 8, 4 at weight 1/2 each.
    # Anchor 1: positives 0 (1), 2 (4), negative 3 (3) -> 3, 0.75 at 1/2.  Anchor 2: positives 0 (2), 1 (4),
    # negative 3 (1) -> 0.5, 0.25 at 1/2.  Anchor 3: no positive -> 0 at weight 1.
    order = np.lexsort((th.weights, th.values))
    np.testing.assert_allclose(th.values[order], [0.0, 0.25, 0.5, 0.75, 3.0, 4.0, 8.0])
    np.testing.assert_allclose(th.weights[order], [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert th.weights.sum() == pytest.approx(4.0)  # every anchor weighs 1
    assert th.share_above(1.0) == pytest.approx(1.5 / 4)


def test_random_lists_match_numpy_rederivation():
    rng = np.random.default_rng(3)
    n, k = 60, 12
    x = rng.normal(size=(n, 5))
    labels = rng.integers(0, 6, n)
    d2full = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2full, np.inf)
    idx = np.argsort(d2full, axis=1)[:, :k]
    d2 = np.take_along_axis(d2full, idx, 1)
    th = kappa_thresholds(idx, d2, labels, "strict")
    expected = []
    for a in range(n):
        same = labels[idx[a]] == labels[a]
        if not same.any() or same.all():
            expected.append(0.0)
            continue
        expected.append(d2[a][~same].max() / d2[a][same][0])
    np.testing.assert_allclose(th.values, expected)
    q10, q50, q90 = th.quantiles()
    s = np.sort(expected)
    assert q50 == s[int(np.ceil(0.5 * n)) - 1]
    assert q10 <= q50 <= q90


def test_no_anchor_mineable():
    labels = np.array([0, 1, 2])  # every class has one image
    idx = np.array([[1, 2], [0, 2], [0, 1]])
    d2 = np.ones((3, 2))
    th = kappa_thresholds(idx, d2, labels)
    assert (th.values == 0).all()
    assert kappa_for_share(th, 0.5) == 0.0
    assert kappa_for_share(th, 0.0) == np.inf
    assert KappaThresholds(np.zeros(0), np.zeros(0)).quantiles() == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="share"):
        kappa_for_share(th, 1.5)
    with pytest.raises(ValueError, match="selection"):
        kappa_thresholds(idx, d2, labels, "loose")
