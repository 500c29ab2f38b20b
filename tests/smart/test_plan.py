"""TripletPlan and build_epoch_plan: exact mixing fractions, shortfall, random-triplet validity, shards, batches."""

from __future__ import annotations

import numpy as np
import pytest

from smartmine.smart.plan import TripletPlan, build_epoch_plan, random_triplets
from smartmine.smart.selection import SelectionResult

LABELS = np.repeat(np.arange(6), 10)  # 60 points, 6 classes of 10
LABELS = np.concatenate([LABELS, [6]])  # plus one single-image class (index 60)


def fake_selection(m: int, labels: np.ndarray = LABELS) -> SelectionResult:
    """``m`` distinct valid-looking mined triplets (a, p, n) with a recognisable pattern."""
    n = labels.size
    a = np.arange(m, dtype=np.int64)
    p = np.where(a % 10 == 9, a - 1, a + 1)
    neg = (a + 10) % 60
    num_mined = np.bincount(a, minlength=n)
    return SelectionResult(a, p, neg, num_mined.copy(), num_mined, np.full(n, -1, np.int64), 0, 0, 0, 0, 1.0, "strict")


def check_valid(plan: TripletPlan, labels: np.ndarray) -> None:
    assert (labels[plan.a] == labels[plan.p]).all()
    assert (labels[plan.a] != labels[plan.n]).all()
    assert (plan.a != plan.p).all()


@pytest.mark.parametrize(("total", "fraction"), [(100, 0.3), (100, 0.5), (7, 0.5), (50, 1.0), (50, 0.0)])
def test_mixing_fraction_is_exact(total, fraction):
    sel = fake_selection(55)
    plan = build_epoch_plan(sel, LABELS, total, fraction, np.random.default_rng(0))
    want = round(fraction * total)
    assert len(plan) == total and plan.num_mined == want and plan.num_random == total - want
    assert plan.mined_shortfall == 0
    mined = set(zip(sel.anchors.tolist(), sel.positives.tolist(), sel.negatives.tolist(), strict=True))
    got = list(zip(plan.a[plan.is_mined].tolist(), plan.p[plan.is_mined].tolist(), plan.n[plan.is_mined].tolist(),
                   strict=True))  # fmt: skip
    assert set(got) <= mined and len(set(got)) == len(got)  # a subset, without repeats
    check_valid(plan, LABELS)


def test_shortfall_is_filled_with_random_triplets():
    plan = build_epoch_plan(fake_selection(10), LABELS, 100, 0.5, np.random.default_rng(1))
    assert plan.num_mined == 10 and plan.num_random == 90
    assert plan.num_mined_requested == 50 and plan.mined_shortfall == 40
    check_valid(plan, LABELS)


def test_plan_is_shuffled_and_deterministic():
    a = build_epoch_plan(fake_selection(50), LABELS, 100, 0.5, np.random.default_rng(7))
    b = build_epoch_plan(fake_selection(50), LABELS, 100, 0.5, np.random.default_rng(7))
    assert np.array_equal(a.a, b.a) and np.array_equal(a.is_mined, b.is_mined)
    assert 0 < a.is_mined[:50].sum() < 50  # mined triplets are not all at the front


def test_random_triplets_are_valid_and_uniform():
    rng = np.random.default_rng(0)
    a, p, n = random_triplets(LABELS, 60_000, rng)
    check_valid(TripletPlan(a, p, n, np.zeros(a.size, bool)), LABELS)
    assert 60 not in a  # the single-image class has no positive: never an anchor
    # Uniform anchors over the 60 eligible points; the negative is uniform over the 51 other points (incl. 60).
    counts = np.bincount(a, minlength=61)[:60]
    assert counts.min() > 850 and counts.max() < 1150  # expected 1000 each
    neg_of_0 = n[LABELS[a] == 0]
    share = np.mean(neg_of_0 == 60)
    assert abs(share - 1 / 51) < 0.006


def test_random_triplets_bad_labels():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="one class"):
        random_triplets(np.zeros(5, np.int64), 3, rng)
    with pytest.raises(ValueError, match="two or more"):
        random_triplets(np.arange(5), 3, rng)


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder():
    plan = build_epoch_plan(fake_selection(30), LABELS, 103, 0.5, np.random.default_rng(0))
    shards = [plan.shard(r, 4) for r in range(4)]
    assert [len(s) for s in shards] == [25] * 4
    pos = np.arange(100)
    got = np.sort(np.concatenate([pos[r::4] for r in range(4)]))
    assert np.array_equal(got, pos)
    for r, s in enumerate(shards):
        assert np.array_equal(s.a, plan.a[r:100:4]) and np.array_equal(s.is_mined, plan.is_mined[r:100:4])
    with pytest.raises(ValueError, match="rank"):
        plan.shard(4, 4)


def test_batches_and_to_batch():
    plan = build_epoch_plan(fake_selection(30), LABELS, 103, 0.5, np.random.default_rng(0))
    sizes = [len(b.a) for b in plan.batches(25)]
    assert sizes == [25, 25, 25, 25, 3] and plan.num_batches(25) == 5
    assert [len(b.a) for b in plan.batches(25, drop_last=True)] == [25] * 4 and plan.num_batches(25, True) == 4
    a, p, n, is_mined = next(iter(plan.batches(25)))
    assert np.array_equal(a, plan.a[:25]) and np.array_equal(is_mined, plan.is_mined[:25])
    idx, (ra, rp, rn) = plan.to_batch()
    assert np.array_equal(idx[ra.numpy()], plan.a) and np.array_equal(idx[rn.numpy()], plan.n)
    assert np.array_equal(idx, np.unique(np.concatenate([plan.a, plan.p, plan.n])))


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="mined_fraction"):
        build_epoch_plan(None, LABELS, 10, 1.5, rng)
    with pytest.raises(ValueError, match="num_triplets"):
        build_epoch_plan(None, LABELS, -1, 0.5, rng)
    with pytest.raises(ValueError, match="selection"):
        build_epoch_plan(fake_selection(5, LABELS[:30]), LABELS, 10, 0.5, rng)
    assert len(build_epoch_plan(None, LABELS, 0, 0.5, rng)) == 0
    with pytest.raises(ValueError, match="equal length"):
        TripletPlan(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64), np.zeros(2, bool))
