"""HoldoutGuard: hand-worked plateau sequences, warm-up epochs, validation, state round trip; holdout_rows; the
guard's scale on a SmartMiner's plan."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smartmine.data.splits import holdout_rows
from smartmine.smart import HoldoutGuard, SmartMiner


def test_plateau_halves_after_patience_mined_epochs():
    g = HoldoutGuard(patience=2, factor=0.5)
    # 0.30 new best; 0.29 stale 1; 0.30 is not above the best: stale 2 -> halve, count restarts;
    # 0.31 new best; 0.20, 0.25 -> halve again.
    scales = [g.update(s, mined=True) for s in (0.30, 0.29, 0.30, 0.31, 0.20, 0.25)]
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert g.best == 0.31 and g.stale == 0


def test_random_epochs_move_the_best_but_never_shrink():
    g = HoldoutGuard(patience=1)
    assert g.update(0.5, mined=False) == 1.0
    assert g.update(0.4, mined=False) == 1.0  # a warm-up epoch cannot blame mining
    assert g.best == 0.5
    assert g.update(0.45, mined=True) == 0.5  # the first mined epoch below the warm-up's best
    assert g.update(0.6, mined=True) == 0.5  # a new best does not grow the scale back


def test_min_delta():
    g = HoldoutGuard(patience=1, min_delta=0.05)
    g.update(0.50, mined=True)
    assert g.update(0.54, mined=True) == 0.5  # +0.04 is not an improvement
    assert g.best == 0.50
    assert g.update(0.56, mined=True) == 0.5 and g.best == 0.56


@pytest.mark.parametrize(
    "kwargs, match",
    [({"patience": 0}, "patience"), ({"factor": 1.0}, "factor"), ({"factor": 0.0}, "factor"),
     ({"min_delta": -0.1}, "min_delta"), ({"min_delta": math.nan}, "min_delta")],
)  # fmt: skip
def test_validation_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HoldoutGuard(**kwargs)


def test_nonfinite_score_refused():
    with pytest.raises(ValueError, match="score"):
        HoldoutGuard().update(math.nan, mined=True)


def test_state_round_trip_continues_identically():
    a = HoldoutGuard(patience=2, factor=0.25)
    for s in (0.3, 0.2, 0.1):
        a.update(s, mined=True)
    b = HoldoutGuard()
    b.load_state_dict(a.state_dict())
    for s in (0.25, 0.2, 0.35, 0.1, 0.1):
        assert a.update(s, mined=True) == b.update(s, mined=True)
    assert a.state_dict() == b.state_dict()


def test_holdout_rows_holds_whole_classes_with_two_images():
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 5, 5])  # class 2 has one image: never held out
    mask = holdout_rows(labels, 2, seed=3)
    held = np.unique(labels[mask])
    assert held.size == 2 and 2 not in held
    for c in held:  # every row of a held-out class, nothing else
        assert mask[labels == c].all()
    assert not mask[~np.isin(labels, held)].any()
    assert np.array_equal(mask, holdout_rows(labels, 2, seed=3))  # seeded
    assert any(not np.array_equal(mask, holdout_rows(labels, 2, seed=s)) for s in range(10))


@pytest.mark.parametrize("classes", [1, 4, 5])
def test_holdout_rows_refuses_too_many_or_too_few(classes):
    labels = np.repeat(np.arange(5), 3)  # 5 eligible classes: 2..3 may be held out
    with pytest.raises(ValueError, match="holdout_classes"):
        holdout_rows(labels, classes, seed=0)


def test_guard_scale_shrinks_the_miners_plan():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    emb = rng.normal(size=(200, 8)) + 3 * np.eye(10, 8)[labels]
    miner = SmartMiner(adaptive=False, kappa=1.0, warmup_epochs=0, mined_fraction=0.5, selection="margin_aware",
                       holdout_guard=HoldoutGuard(patience=1))  # fmt: skip
    plan, stats = miner.plan_epoch(emb, labels, 0)
    assert stats["mined_planned"] == 100
    miner.update_holdout(0.5)
    miner.update_holdout(0.4)  # mined epoch without a new best: scale 0.5
    plan, stats = miner.plan_epoch(emb, labels, 1)
    assert stats["mined_planned"] == 50 and stats["mined_fraction"] == 0.25
    state = miner.state_dict()
    again = SmartMiner(adaptive=False, kappa=1.0, warmup_epochs=0, holdout_guard=HoldoutGuard())
    again.load_state_dict(state)
    assert again.guard_scale == 0.5 and again.holdout_guard.patience == 1
    with pytest.raises(ValueError, match="holdout_guard"):
        SmartMiner().load_state_dict(state)


def test_update_holdout_without_guard_is_an_error():
    with pytest.raises(RuntimeError, match="holdout_guard"):
        SmartMiner().update_holdout(0.5)
