"""Algorithm 1 (``select_triplets``): hand-built neighbour lists per branch, and a literal pure-Python walk of the
algorithm compared with the compiled kernel on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smartmine.smart.selection import select_triplets

INF = np.inf


def lists(rows: list[list[tuple[int, float]]], k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) neighbour arrays from per-anchor [(index, sq_distance), ...], padded with (-1, inf)."""
    k = k or max(len(r) for r in rows)
    idx = np.full((len(rows), k), -1, np.int64)
    d2 = np.full((len(rows), k), INF)
    for i, r in enumerate(rows):
        for j, (v, d) in enumerate(r):
            idx[i, j], d2[i, j] = v, d
    return idx, d2


def select(rows, labels, kappa, **kw):
    idx, d2 = lists(rows)
    return select_triplets(idx, d2, np.asarray(labels), kappa, np.random.default_rng(0), **kw)


def triplets(res) -> list[tuple[int, int, int]]:
    return list(zip(res.anchors.tolist(), res.positives.tolist(), res.negatives.tolist(), strict=True))


# Anchor 0 (class 0), its list: neg 1 (1.0), x+NN 2 (2.0), neg 3 (3.0), neg 4 (5.0), pos 5 (6.0), neg 6 (7.0),
# pos 7 (8.0).
# Class 0 = {0, 2, 5, 7}: fully listed, so no positive exists outside the list.
LABELS = [0, 1, 0, 1, 1, 0, 1, 0]
ROW0 = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 5.0), (5, 6.0), (6, 7.0), (7, 8.0)]
EMPTY: list[tuple[int, float]] = []


def test_kappa_one_pairs_each_negative_with_first_farther_positive():
    res = select([ROW0] + [EMPTY] * 7, LABELS, 1.0, triplets_per_anchor=3)
    # bound = 2.0: neg 1 is inside; negatives 3, 4, 6 valid; x+NN (2) is never used.
    assert triplets(res) == [(0, 5, 3), (0, 5, 4), (0, 7, 6)]
    assert res.num_valid_negatives[0] == 3
    assert res.nearest_positive[0] == 2
    assert res.num_mined[0] == 3 and bool(res.has_mined[0])
    assert res.num_random_positives == 0


def test_kappa_moves_the_boundary():
    rows = [ROW0] + [EMPTY] * 7
    # bound = 4.0: negative 3 (3.0) now inside the exclusion sphere.
    assert triplets(select(rows, LABELS, 2.0, triplets_per_anchor=3)) == [(0, 5, 4), (0, 7, 6)]
    # bound = 6.0: only negative 6 (7.0) is beyond it; positive 5 sits exactly on the bound and stays a candidate.
    assert triplets(select(rows, LABELS, 3.0, triplets_per_anchor=3)) == [(0, 7, 6)]
    # bound = 14: no valid negative at all.
    res = select(rows, LABELS, 7.0, triplets_per_anchor=3)
    assert res.num_triplets == 0 and res.num_valid_negatives[0] == 0
    assert res.num_without_negative == 8 and res.num_without_positive == 7


def test_negative_on_the_bound_is_not_valid():
    # Eq. 6 is strict: D² = κ · D²(x+NN) exactly is not valid.
    rows = [[(2, 2.0), (3, 4.0), (5, 9.0)]] + [EMPTY] * 7
    assert select(rows, LABELS, 2.0).num_triplets == 0
    assert triplets(select(rows, LABELS, 1.9)) == [(0, 5, 3)]


def test_negatives_used_once_per_anchor():
    res = select([ROW0] + [EMPTY] * 7, LABELS, 1.0, triplets_per_anchor=10)
    assert res.num_triplets == 3  # three valid negatives, each used once
    assert sorted(res.negatives.tolist()) == [3, 4, 6]


def test_one_slot_takes_the_nearest_valid_negative():
    assert triplets(select([ROW0] + [EMPTY] * 7, LABELS, 1.0)) == [(0, 5, 3)]


def test_no_positive_in_list_gives_nothing():
    rows = [[(1, 1.0), (3, 2.0), (4, 3.0)]] + [EMPTY] * 7
    res = select(rows, LABELS, 1.0)
    assert res.num_triplets == 0
    assert res.nearest_positive[0] == -1 and res.num_valid_negatives[0] == 0
    assert res.num_without_positive == 8


def test_no_valid_negative_when_every_negative_is_nearer_than_the_nearest_positive():
    rows = [[(1, 1.0), (3, 1.5), (2, 2.0), (5, 3.0)]] + [EMPTY] * 7
    res = select(rows, LABELS, 1.0)
    assert res.num_triplets == 0 and res.nearest_positive[0] == 2 and res.num_valid_negatives[0] == 0


def test_kappa_below_one_admits_negatives_inside_the_nearest_positive_radius():
    rows = [[(1, 1.0), (3, 1.5), (2, 2.0), (5, 3.0)]] + [EMPTY] * 7
    # bound = 0.6 · 2 = 1.2: negative 3 (1.5) is valid though listed before x+NN, negative 1 (1.0) is not.
    res = select(rows, LABELS, 0.6, triplets_per_anchor=2)
    assert triplets(res) == [(0, 5, 3)]
    assert res.num_valid_negatives[0] == 1


def test_positive_nearer_than_every_negative_falls_back_to_random_positive_outside_the_list():
    # Class 0 = {0, 2, 5, 8}; 8 is not listed, so it is the only possible positive outside S_0.
    labels = [0, 1, 0, 1, 1, 0, 1, 1, 0]
    rows = [[(2, 1.0), (5, 1.5), (3, 2.0), (4, 3.0)]] + [EMPTY] * 8
    res = select(rows, labels, 1.0, triplets_per_anchor=2)
    assert triplets(res) == [(0, 8, 3), (0, 8, 4)]
    assert res.num_random_positives == 2 and res.num_unfilled_slots == 0


def test_class_fully_listed_leaves_slot_unfilled():
    rows = [[(2, 1.0), (5, 1.5), (7, 1.7), (3, 2.0), (4, 3.0)]] + [EMPTY] * 7
    res = select(rows, LABELS, 1.0, triplets_per_anchor=2)
    assert res.num_triplets == 0
    assert res.num_valid_negatives[0] == 2 and res.num_unfilled_slots == 2
    assert not res.has_mined[0]


def test_positive_before_and_after_the_negative():
    # Positives 5 (before negative 3) and 7 (after it): strict takes 7, the first one farther than the negative.
    rows = [[(2, 1.0), (5, 2.0), (3, 4.0), (7, 9.0)]] + [EMPTY] * 7
    assert triplets(select(rows, LABELS, 1.0)) == [(0, 7, 3)]


def test_margin_aware_takes_a_listed_positive_within_the_margin():
    # D(a,n) = 2; positive 5 at D = 1.9 (1.9 + 0.2 > 2) qualifies in margin-aware mode only; 7 at D = 3 in strict.
    rows = [[(2, 1.0), (5, 1.9**2), (3, 4.0), (7, 9.0)]] + [EMPTY] * 7
    assert triplets(select(rows, LABELS, 1.0, selection="margin_aware", margin=0.2)) == [(0, 5, 3)]
    assert triplets(select(rows, LABELS, 1.0, selection="strict")) == [(0, 7, 3)]
    # A positive at D = 1.7 is outside the margin (1.7 + 0.2 < 2): margin-aware moves on to 7 as well.
    rows = [[(2, 1.0), (5, 1.7**2), (3, 4.0), (7, 9.0)]] + [EMPTY] * 7
    assert triplets(select(rows, LABELS, 1.0, selection="margin_aware", margin=0.2)) == [(0, 7, 3)]


def test_padding_and_self_entries_are_ignored():
    idx, d2 = lists([ROW0] + [EMPTY] * 7, k=10)  # three padding columns
    res = select_triplets(idx, d2, np.asarray(LABELS), 1.0, np.random.default_rng(0), triplets_per_anchor=3)
    assert triplets(res) == [(0, 5, 3), (0, 5, 4), (0, 7, 6)]
    # A stray self entry at distance 0 must not become x+NN (which would make every negative valid).
    rows = [[(0, 0.0)] + ROW0] + [EMPTY] * 7
    assert triplets(select(rows, LABELS, 1.0, triplets_per_anchor=3)) == [(0, 5, 3), (0, 5, 4), (0, 7, 6)]


def test_single_image_class_is_never_an_anchor():
    labels = [0, 0, 1, 2, 2]
    rows = [
        [(1, 1.0), (2, 4.0)],
        [(0, 1.0), (3, 4.0)],
        [(0, 1.0), (1, 2.0)],
        [(4, 1.0), (2, 2.0)],
        [(3, 1.0), (0, 2.0)],
    ]
    res = select(rows, labels, 1.0)
    assert 2 not in res.anchors.tolist()
    assert res.nearest_positive[2] == -1


def test_bad_input_raises():
    idx, d2 = lists([ROW0] + [EMPTY] * 7)
    lab = np.asarray(LABELS)
    rng = np.random.default_rng(0)
    bad = d2.copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_triplets(idx, bad, lab, 1.0, rng)
    with pytest.raises(ValueError, match="sorted"):
        select_triplets(idx, d2[:, ::-1].copy(), lab, 1.0, rng)
    out = idx.copy()
    out[0, 0] = 8
    with pytest.raises(ValueError, match="neighbour_indices"):
        select_triplets(out, d2, lab, 1.0, rng)
    with pytest.raises(ValueError, match="kappa"):
        select_triplets(idx, d2, lab, 0.0, rng)
    with pytest.raises(ValueError, match="kappa"):
        select_triplets(idx, d2, lab, np.nan, rng)
    with pytest.raises(ValueError, match="selection"):
        select_triplets(idx, d2, lab, 1.0, rng, selection="hard")
    with pytest.raises(ValueError, match="labels"):
        select_triplets(idx, d2, lab[:-1], 1.0, rng)
    with pytest.raises(ValueError, match="shape"):
        select_triplets(idx, d2[:, :3], lab, 1.0, rng)
    with pytest.raises(ValueError, match="rng"):
        select_triplets(idx, d2, lab, 1.0, 0)


def test_empty_input():
    res = select_triplets(np.zeros((0, 0), np.int64), np.zeros((0, 0)), np.zeros(0, np.int64), 1.0,
                          np.random.default_rng(0))  # fmt: skip
    assert res.num_triplets == 0 and res.num_mined.shape == (0,)


# --------------------------------------------------------------------------------------------------- reference
def reference(idx, d2, labels, kappa, uniforms, slots, strict, margin):
    """Algorithm 1 as written in ALGORITHMS.md §3, one anchor at a time, for κ >= 1."""
    out = []
    n = len(labels)
    for a in range(n):
        entries = [(int(v), float(d)) for v, d in zip(idx[a], d2[a], strict=True) if v >= 0 and v != a]
        same = [v for v, _ in entries if labels[v] == labels[a]]
        bound, negs, poss = None, [], []
        for v, d in entries:
            if bound is None:  # skip until the first positive, which sets the bound and is never used
                if labels[v] == labels[a]:
                    bound = kappa * d
                continue
            if labels[v] != labels[a]:
                if d > bound:
                    negs.append((v, d))
            elif d >= bound:
                poss.append((v, d))
        outside = sorted(set(np.nonzero(labels == labels[a])[0].tolist()) - set(same) - {a})
        for s in range(min(slots, len(negs))):
            nv, nd = negs[s]
            if strict:
                cands = [v for v, d in poss if d > nd]
            else:
                cands = [v for v, d in poss if math.sqrt(d) + margin > math.sqrt(nd)]
            if cands:
                out.append((a, cands[0], nv))
            elif outside:
                r = min(int(uniforms[a, s] * len(outside)), len(outside) - 1)
                out.append((a, outside[r], nv))
            else:
                break
    return out


@pytest.mark.parametrize("seed", range(24))
def test_kernel_matches_reference_on_random_lists(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(20, 60)), int(rng.integers(3, 15))
    labels = rng.integers(0, int(rng.integers(2, 6)), n)
    idx = np.stack([rng.permutation(np.delete(np.arange(n), i))[:k] for i in range(n)])
    # Coarse distances so that ties (between negatives, positives, and with the bound) occur.
    d2 = np.sort(rng.integers(0, 12, (n, k)).astype(np.float64) / 4, axis=1)
    pad = rng.random(n) < 0.3
    cut = rng.integers(0, k, n)
    for i in np.nonzero(pad)[0]:
        idx[i, cut[i] :], d2[i, cut[i] :] = -1, np.inf
    kappa = float(rng.choice([1.0, 1.5, 2.0, 4.0]))
    slots = int(rng.integers(1, 4))
    strict = bool(seed % 2)
    margin = float(rng.choice([0.0, 0.2, 0.5]))
    mode = "strict" if strict else "margin_aware"
    res = select_triplets(idx, d2, labels, kappa, np.random.default_rng(seed), triplets_per_anchor=slots,
                          selection=mode, margin=margin)  # fmt: skip
    uniforms = np.random.default_rng(seed).random((n, slots))
    assert triplets(res) == reference(idx, d2, labels, kappa, uniforms, slots, strict, margin)
    # Invariants: labels, strictness, counts.
    a, p, ng = res.triplets
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[ng]).all() and (a != p).all()
    assert res.num_mined.sum() == res.num_triplets


def test_strict_triplets_violate_order_on_exact_lists():
    """With exact, complete lists (every point listed) strict mining gives D(a,n) < D(a,p) for every triplet."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 4))
    labels = rng.integers(0, 4, 80)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    order = np.argsort(d2, axis=1)[:, :30]
    sd2 = np.take_along_axis(d2, order, 1)
    res = select_triplets(order, sd2, labels, 1.0, rng, triplets_per_anchor=3)
    a, p, n = res.triplets
    assert res.num_triplets > 50
    listed = d2[a, n] < d2[a, p]
    assert listed.all()


# --------------------------------------------------------------------------------------------------- chunks and threads
def _random_lists(seed: int, n: int = 200, k: int = 12):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    idx = np.stack([rng.permutation(np.delete(np.arange(n), i))[:k] for i in range(n)])
    d2 = np.sort(rng.integers(0, 16, (n, k)).astype(np.float64) / 4, axis=1)
    return idx, d2, labels


@pytest.mark.parametrize("threads", [1, 3])
def test_chunked_threads_match_reference(monkeypatch, threads):
    """Chunks of 7 anchors on 1 or 3 threads: the same triplets as the one-anchor-at-a-time reference."""
    import smartmine.smart.selection as sel

    monkeypatch.setattr(sel, "_CHUNK_ROWS", 7)
    idx, d2, labels = _random_lists(5)
    res = select_triplets(idx, d2, labels, 1.5, np.random.default_rng(9), triplets_per_anchor=2, n_threads=threads)
    uniforms = np.random.default_rng(9).random((len(labels), 2))
    assert triplets(res) == reference(idx, d2, labels, 1.5, uniforms, 2, True, 0.2)
    assert res.num_triplets > 0


@pytest.mark.parametrize(("row", "problem", "message"), [
    (150, "nan", "NaN for a non-padding entry \\(row 150\\)"),
    (151, "unsorted", "row 151 is not"),
    (152, "range", "got \\[-1, 999\\] \\(first bad row: 152\\)"),
    (153, "negative", "got \\[-5, 199\\] \\(first bad row: 153\\)"),
])  # fmt: skip
def test_bad_entry_in_a_later_chunk_names_its_row(monkeypatch, row, problem, message):
    import smartmine.smart.selection as sel

    monkeypatch.setattr(sel, "_CHUNK_ROWS", 16)
    idx, d2, labels = _random_lists(6)
    idx[:, -1], d2[:, -1] = -1, np.inf  # some padding everywhere: the range starts at -1
    if problem == "nan":
        d2[row, 3] = np.nan
    elif problem == "unsorted":
        d2[row, 2], d2[row, 4] = 3.9, 0.1
    elif problem == "range":
        idx[row, 0] = 999
    else:
        idx[row, 5] = -5
    with pytest.raises(ValueError, match=message):
        select_triplets(idx, d2, labels, 1.0, np.random.default_rng(0), n_threads=2)


def test_bad_thread_count():
    idx, d2, labels = _random_lists(7, n=20, k=4)
    with pytest.raises(ValueError, match="n_threads"):
        select_triplets(idx, d2, labels, 1.0, np.random.default_rng(0), n_threads=0)
