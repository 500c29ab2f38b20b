"""widen_lists: sampled positives and negatives appended to neighbour lists, checked against a NumPy re-derivation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartmine.smart.list_extras import widen_lists
from smartmine.smart.miner import SmartMiner


def _exact_lists(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).astype(np.float64)
    np.fill_diagonal(d2, np.inf)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(d2, order, axis=1)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(8), [1, 2, 4, 9, 9, 9, 9, 9])  # a single-image class, small and larger classes
    x = rng.normal(size=(labels.size, 5)).astype(np.float32)
    idx, d2 = _exact_lists(x, 4)
    return x, labels, idx, d2


def test_rows_hold_the_lists_and_the_extras_with_exact_distances(data):
    x, labels, idx, d2 = data
    wi, wd = widen_lists(x, idx, d2, labels, np.random.default_rng(0), extra_positives=5, extra_negatives=6)
    assert wi.shape == wd.shape == (labels.size, 4 + 5 + 6)
    for a in range(labels.size):
        keep = wi[a] >= 0
        row, dist = wi[a][keep], wd[a][keep]
        assert np.all(np.isinf(wd[a][~keep]))  # padding last
        assert len(set(row.tolist())) == row.size and a not in row
        assert np.all(np.diff(dist) >= 0)
        np.testing.assert_allclose(dist, ((x[row] - x[a]) ** 2).sum(1), rtol=1e-5, atol=1e-6)
        assert set(idx[a].tolist()) <= set(row.tolist())
        others = set(np.nonzero(labels == labels[a])[0].tolist()) - {a}
        same = {int(v) for v in row if labels[v] == labels[a]}
        listed_same = {int(v) for v in idx[a] if labels[v] == labels[a]}
        if len(others) <= 5:
            assert same == others  # the whole (small) class is added
        else:
            assert len(same - listed_same) <= 5 and len(same) >= min(5, len(others))
        # at least one other-class point is added (six draws with replacement)
        assert any(labels[v] != labels[a] for v in row if v not in set(idx[a].tolist()))


def test_a_single_image_class_gains_no_positive(data):
    x, labels, idx, d2 = data
    wi, _ = widen_lists(x, idx, d2, labels, np.random.default_rng(1), extra_positives=8, extra_negatives=0)
    assert not np.any(labels[wi[0][wi[0] >= 0]] == labels[0])


def test_zero_extras_return_the_inputs_and_torch_inputs_work(data):
    x, labels, idx, d2 = data
    same_i, same_d = widen_lists(x, idx, d2, labels, np.random.default_rng(0))
    assert same_i is idx and same_d is d2
    wi, wd = widen_lists(torch.from_numpy(x), torch.from_numpy(idx), torch.from_numpy(d2), labels,
                         np.random.default_rng(0), extra_positives=2, extra_negatives=2)  # fmt: skip
    ni, nd = widen_lists(x, idx, d2, labels, np.random.default_rng(0), extra_positives=2, extra_negatives=2)
    np.testing.assert_array_equal(wi, ni)
    np.testing.assert_allclose(wd, nd)


def test_negative_counts_are_refused(data):
    x, labels, idx, d2 = data
    with pytest.raises(ValueError, match="extra_negatives"):
        widen_lists(x, idx, d2, labels, np.random.default_rng(0), extra_negatives=-1)


def test_widened_miner_mines_anchors_whose_lists_stop_short():
    """Two clusters of two overlapping classes, far apart: with κ = 4 few listed negatives (all inside the own
    cluster) pass the bound, so the lists alone mine few anchors; sampled negatives from the other cluster make
    nearly every anchor mineable."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 6)
    centres = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    x = (centres[labels] + rng.normal(scale=0.3, size=(24, 2))).astype(np.float32)
    common = dict(adaptive=False, kappa=4.0, warmup_epochs=0, selection="semihard", k=3, mined_fraction=1.0,
                  list_recall_sample=0)  # fmt: skip
    plain = SmartMiner(**common)
    wide = SmartMiner(**common, extra_positives=5, extra_negatives=8)
    _, s_plain = plain.plan_epoch(x, labels, 0)
    _, s_wide = wide.plan_epoch(x, labels, 0)
    assert s_wide["anchors_mined"] > s_plain["anchors_mined"]
    assert s_wide["anchors_mined"] >= 20
    sel = wide.last_selection
    d = lambda i, j: ((x[i] - x[j]) ** 2).sum(1)  # noqa: E731
    assert np.all(d(sel.anchors, sel.negatives) > 4.0 * d(sel.anchors, sel.positives) * (1 - 1e-6))
    assert np.all(labels[sel.positives] == labels[sel.anchors]) and np.all(labels[sel.negatives] != labels[sel.anchors])


def test_repeated_and_self_entries_of_an_approximate_list_are_dropped(data):
    x, labels, idx, d2 = data
    idx, d2 = idx.copy(), d2.copy()
    idx[5, 1], d2[5, 1] = idx[5, 0], d2[5, 0]  # a point listed twice (same distance)
    idx[6, 0], d2[6, 0] = 6, 0.0  # the anchor itself
    idx[7, 3], d2[7, 3] = -1, np.inf  # padding
    wi, wd = widen_lists(x, idx, d2, labels, np.random.default_rng(2), extra_positives=3, extra_negatives=3)
    for a in (5, 6, 7):
        row = wi[a][wi[a] >= 0]
        assert len(set(row.tolist())) == row.size and a not in row
        assert np.all(np.diff(wd[a][wi[a] >= 0]) >= 0) and np.all(np.isinf(wd[a][wi[a] < 0]))
    assert idx[5, 0] in wi[5]
