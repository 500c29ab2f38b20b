"""``semihard`` selection against a pure-Python restatement of its rule and a hand-worked list."""

from __future__ import annotations

import numpy as np
import pytest

from smartmine.smart.selection import select_triplets


def restated(idx, d2, labels, kappa, uniforms):
    """The rule in plain Python: per slot a listed positive chosen by the slot's uniform, then the nearest unused
    listed negative with D² > κ·D²(a,p)."""
    out = []
    for a in range(idx.shape[0]):
        pos = [(j, d) for j, d in zip(idx[a], d2[a], strict=True) if j >= 0 and j != a and labels[j] == labels[a]]
        neg = [(j, d) for j, d in zip(idx[a], d2[a], strict=True) if j >= 0 and j != a and labels[j] != labels[a]]
        if not pos:
            continue
        used = set()
        for u in uniforms[a]:
            p, dp = pos[min(int(u * len(pos)), len(pos) - 1)]
            cand = [j for j, d in neg if d > kappa * max(dp, 0.0) and j not in used]
            if cand:
                used.add(cand[0])
                out.append((a, p, cand[0]))
    return out


def test_hand_worked_list():
    labels = np.array([0, 0, 0, 1, 1])
    # Anchor 0: positives 1 (D² 1), 2 (D² 4); negatives 3 (D² 2), 4 (D² 5). Other rows do not matter here.
    idx = np.array([[1, 3, 2, 4]] + [[0, 1, 2, 3]] * 4)
    d2 = np.array([[1.0, 2.0, 4.0, 5.0]] + [[1.0, 2.0, 3.0, 4.0]] * 4)
    # (κ, negative paired with positive 1, negative paired with positive 2; None: no negative past the bound)
    cases = ((1.0, 3, 4), (2.5, 4, None), (0.4, 3, 3))
    for seed in range(40):
        u = np.random.default_rng(seed).random((5, 1))[0, 0]  # the uniform select_triplets draws for anchor 0
        p = 1 if u < 0.5 else 2
        for kappa, n1, n2 in cases:
            sel = select_triplets(idx, d2, labels, kappa, np.random.default_rng(seed), selection="semihard")
            n = n1 if p == 1 else n2
            mine = [(int(q), int(z)) for a, q, z in zip(*sel.triplets, strict=True) if a == 0]
            assert mine == ([] if n is None else [(p, n)])
            assert restated(idx[:1], d2[:1], labels, kappa, np.array([[u]])) == ([] if n is None else [(0, p, n)])


def test_matches_restatement_on_random_lists():
    rng = np.random.default_rng(7)
    n, k, slots = 80, 15, 3
    x = rng.normal(size=(n, 4))
    labels = rng.integers(0, 5, n)
    d2full = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2full, np.inf)
    idx = np.argsort(d2full, axis=1)[:, :k]
    d2 = np.take_along_axis(d2full, idx, 1)
    idx[::7, -2:] = -1  # some padding
    d2[::7, -2:] = np.inf
    for kappa in (0.5, 1.0, 2.0):
        sel = select_triplets(idx, d2, labels, kappa, np.random.default_rng(11), triplets_per_anchor=slots,
                              selection="semihard", n_threads=2)  # fmt: skip
        uniforms = np.random.default_rng(11).random((n, slots))
        expected = restated(idx, d2, labels, kappa, uniforms)
        assert list(zip(sel.anchors.tolist(), sel.positives.tolist(), sel.negatives.tolist(), strict=True)) == expected
        # Every mined triplet is semi-hard scaled by κ: D²(a,n) > κ·D²(a,p).
        assert (d2full[sel.anchors, sel.negatives] > kappa * d2full[sel.anchors, sel.positives]).all()
        assert sel.selection == "semihard"
        assert sel.num_triplets + sel.num_unfilled_slots == slots * np.count_nonzero(sel.nearest_positive >= 0)


def test_kappa_one_is_semihard():
    # κ = 1: the negative is the nearest one farther than the positive (FaceNet's semi-hard rule).
    labels = np.array([0, 0, 1, 1, 1])
    idx = np.array([[2, 1, 3, 4], [0, 2, 3, 4], [3, 4, 0, 1], [2, 4, 0, 1], [2, 3, 0, 1]])
    d2 = np.array([[0.5, 1.0, 1.5, 3.0], [1.0, 2.0, 2.5, 3.0], [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 3.0],
                   [1.0, 2.0, 2.0, 3.0]])  # fmt: skip
    sel = select_triplets(idx, d2, labels, 1.0, np.random.default_rng(0), selection="semihard")
    got = dict(zip(sel.anchors.tolist(), zip(sel.positives.tolist(), sel.negatives.tolist(), strict=True),
                   strict=True))  # fmt: skip
    assert got[0] == (1, 3)  # positive 1 at D² 1: negative 2 (D² 0.5) is harder, 3 (D² 1.5) is the semi-hard one
    assert got[1] == (0, 2)  # positive 0 at D² 1: negative 2 at D² 2
    with pytest.raises(ValueError, match="selection"):
        select_triplets(idx, d2, labels, 1.0, np.random.default_rng(0), selection="semi")
