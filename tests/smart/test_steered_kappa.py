"""SteeredKappa: the audit's failure sequence, shortfalls, auto κ₀, the fit on measured epochs, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from smartmine.smart.controller import AdaptiveKappa, SteeredKappa
from smartmine.smart.thresholds import KappaThresholds


def thresholds(values) -> KappaThresholds:
    v = np.asarray(values, dtype=np.float64)
    return KappaThresholds(v, np.ones_like(v))


WIDE = thresholds(np.full(10, 1e6))  # every anchor mineable at any κ we use: the cap never binds


def test_audit_sequence_zero_mined_epochs_never_raise_kappa():
    # The audit: mining stops for κ >= 8, random-triplet error falls 0.85 -> 0.1, κ0 = 16. The paper's controller,
    # fed with every epoch, reads the falling random error as an effect of κ and climbs.
    random_error = np.linspace(0.85, 0.1, 18)
    legacy = AdaptiveKappa(kappa0=16)
    for e in random_error:
        legacy.update(float(e))
    assert max(r.next_kappa for r in legacy.history) > 16  # the failure being fixed

    # Steered, first without the lists' cap (thresholds that never bind): epochs that mined nothing lower κ and
    # never enter the fit.
    steered = SteeredKappa(kappa0=16)
    for e in random_error[:2]:
        kappa = steered.propose(WIDE, 0.5)
        steered.update(float(e), 0.0 if kappa >= 8 else 1.0)
    assert [(r.kappa, r.next_kappa, r.in_fit) for r in steered.history] == [(16, 8, False), (8, 4, False)]

    # With the cap: the lists say every anchor has t_a = 8, so κ stays below 8 from the first epoch and every epoch
    # fills its plan; κ never rises above where mining works.
    steered = SteeredKappa(kappa0=16)
    lists = thresholds(np.full(10, 8.0))
    for e in random_error:
        kappa = steered.propose(lists, 0.5)
        assert kappa < 8
        steered.update(float(e), 1.0 if lists.share_above(kappa) >= 0.5 else 0.0)
    assert all(r.fill == 1.0 and r.in_fit for r in steered.history)
    assert max(r.kappa for r in steered.history) < 8


def test_shortfall_and_unmeasured_epochs_lower_kappa():
    c = SteeredKappa(kappa0=8, step=2)
    c.propose(WIDE, 0.5)
    assert c.update(None, 1.0) == 4  # nothing counted: treated as a shortfall
    c.propose(WIDE, 0.5)
    assert c.update(0.9, 0.5) == 2  # below min_fill: shortfall, not fitted
    assert [r.in_fit for r in c.history] == [False, False]
    assert [r.rule for r in c.history] == ["shortfall", "shortfall"]


def test_partial_shortfall_never_raises_kappa():
    c = SteeredKappa(kappa0=4, min_fill=0.8)
    c.propose(WIDE, 0.5)
    # Error far above the target would double κ, but the epoch fell short (fill 0.9): κ is kept.
    assert c.update(0.95, 0.9) == 4
    assert c.history[-1].in_fit
    c.propose(WIDE, 0.5)
    assert c.update(0.95, 1.0) == 8  # a full epoch may raise it


def test_auto_kappa0_starts_at_cap_and_cap_binds():
    th = thresholds([0.5, 1.5, 3.0, 6.0])
    c = SteeredKappa(kappa0=None, kappa_min=0.1, cautious_start=False)
    assert c.kappa is None
    with pytest.raises(RuntimeError, match="propose"):
        c.update(0.5, 1.0)
    k = c.propose(th, 0.5)  # half the anchors need t > κ: just below 3
    assert k == pytest.approx(3.0, rel=1e-6) and k < 3.0
    assert th.share_above(k) == 0.5
    c.update(0.1, 1.0)  # error below target: κ would halve; then the cap of a later epoch binds from above
    assert c.kappa == pytest.approx(k / 2)
    c._kappa = 100.0
    capped = SteeredKappa(kappa0=100.0, kappa_min=0.1, min_share_scale=1.0)  # the plan may not shrink: the cap binds
    assert capped.propose(th, 0.75) == pytest.approx(1.5, rel=1e-6) and capped.share_scale == 1.0
    # No κ above the floor can fill the plan: the floor, and the full plan (the shortfall rule takes over).
    assert c.propose(thresholds([0.0, 0.0]), 0.5) == 0.1 and c.share_scale == 1.0


def test_kappa_above_the_cap_shrinks_the_plan_to_what_it_fills():
    # Thresholds 0.5, 1.5, 3, 6 (equal weights). Full plan: half the anchors, cap just below 3.
    th = thresholds([0.5, 1.5, 3.0, 6.0])
    c = SteeredKappa(kappa0=4.0, kappa_min=0.1, min_share_scale=0.25)
    # κ = 4 leaves only t = 6 above it: share 1/4 of anchors against 1/2 planned, so the plan halves and κ stays.
    assert c.propose(th, 0.5) == 4.0 and c.share_scale == pytest.approx(0.5)
    # κ = 7 leaves no anchor: the plan would vanish; it stops at 0.25 × 0.5 = 1/8 of the anchors, whose κ is just
    # below the largest threshold, 6.
    c._kappa = 7.0
    k = c.propose(th, 0.5)
    assert k == pytest.approx(6.0, rel=1e-6) and k < 6.0 and c.share_scale == 0.25
    # Back below the cap: the full plan again.
    c._kappa = 2.0
    assert c.propose(th, 0.5) == 2.0 and c.share_scale == 1.0
    # Resume keeps the scale and the floor; a state without them (written before) restores the old behaviour.
    c._kappa = 4.0
    c.propose(th, 0.5)
    d = SteeredKappa()
    d.load_state_dict(c.state_dict())
    assert d.share_scale == pytest.approx(0.5) and d.min_share_scale == 0.25
    old = {k: v for k, v in c.state_dict().items() if k not in ("min_share_scale", "share_scale")}
    d.load_state_dict(old)
    assert d.share_scale == 1.0 and d.min_share_scale == 1.0
    with pytest.raises(ValueError, match="min_share_scale"):
        SteeredKappa(min_share_scale=0.0)


def test_fit_converges_on_monotone_error_curve():
    # Mined-triplet error falling with κ: e(κ) = 1 / (1 + 0.5 κ); the target 0.5 is met at κ = 2.
    c = SteeredKappa(kappa0=16, kappa_min=0.25, tolerance=0.0)
    for _ in range(15):
        kappa = c.propose(WIDE, 0.5)
        c.update(1.0 / (1.0 + 0.5 * kappa), 1.0)
    assert c.kappa == pytest.approx(2.0, rel=0.05)
    assert {r.rule for r in c.history} >= {"fit"}


def test_bounded_change_and_clamp():
    c = SteeredKappa(kappa0=2, max_change=4, kappa_max=64)
    c.propose(WIDE, 0.5)
    c.update(0.9, 1.0)  # step up to 4
    c.propose(WIDE, 0.5)
    # A fit from (2, 0.9), (4, 0.89) extrapolates far (κ ≈ 82): limited to ×4, then clamped to kappa_max.
    nxt = c.update(0.89, 1.0)
    assert nxt == 16.0
    assert c.history[-1].rule == "fit"


def test_cautious_start_begins_at_the_plan_floor_and_grows_on_a_low_error():
    th = thresholds([0.5, 1.5, 3.0, 6.0])
    c = SteeredKappa(kappa0=None, kappa_min=0.1, min_share_scale=0.5)  # cautious_start is the default
    # The whole plan (half the anchors) fills below 3; its floor (a quarter) below 6: start there, half the plan.
    k = c.propose(th, 0.5)
    assert k == pytest.approx(6.0, rel=1e-6) and k < 6.0 and c.share_scale == 0.5
    assert th.share_above(k) == 0.25
    # Error above the target: κ doubles (12), above the cap, and the plan stays at its floor at the floor's κ.
    c.update(0.9, 1.0)
    assert c.propose(th, 0.5) == pytest.approx(k) and c.share_scale == 0.5
    # Error below the target: κ halves to below the cap of 3, and the whole plan is mined.
    c.update(0.1, 1.0)
    k2 = c.propose(th, 0.5)
    assert k2 < 3.0 and c.share_scale == 1.0
    # Without the cautious start the first epoch mines the whole plan at the cap.
    bold = SteeredKappa(kappa0=None, kappa_min=0.1, min_share_scale=0.5, cautious_start=False)
    assert bold.propose(th, 0.5) == pytest.approx(3.0, rel=1e-6) and bold.share_scale == 1.0
    # A plan that may not shrink (min_share_scale 1) or a fixed κ0 start as before.
    assert SteeredKappa(kappa0=None, kappa_min=0.1, min_share_scale=1.0).propose(th, 0.5) == pytest.approx(3.0)
    assert SteeredKappa(kappa0=2.0, kappa_min=0.1).propose(th, 0.5) == 2.0


def test_state_round_trip_and_validation():
    c = SteeredKappa(kappa0=None, target_error=0.6)
    c.propose(thresholds([2.0, 5.0]), 0.5)
    c.update(0.3, 1.0)
    d = SteeredKappa()
    d.load_state_dict(c.state_dict())
    assert d.kappa == c.kappa and d.history == c.history and d.target_error == 0.6
    e = SteeredKappa(cautious_start=False)
    e.load_state_dict(c.state_dict())
    assert e.cautious_start is True
    e.load_state_dict({k: v for k, v in c.state_dict().items() if k != "cautious_start"})  # written before it existed
    assert e.cautious_start is False and e.kappa == c.kappa
    c.propose(WIDE, 0.5)
    d.propose(WIDE, 0.5)
    assert c.update(0.7, 1.0) == d.update(0.7, 1.0)
    with pytest.raises(ValueError, match="SteeredKappa"):
        d.load_state_dict(AdaptiveKappa().state_dict())
    for kwargs, match in (({"kappa0": 0.5}, "kappa0"), ({"min_fill": 0}, "min_fill"), ({"step": 1.0}, "step"),
                          ({"max_change": 1.5}, "max_change"), ({"target_error": 1.0}, "target_error")):
        with pytest.raises(ValueError, match=match):
            SteeredKappa(**kwargs)
    with pytest.raises(ValueError, match="fill"):
        d.update(0.5, 1.5)
