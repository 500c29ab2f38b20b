"""AdaptiveKappa: hand-computed fit and probing steps, convergence on synthetic monotone error curves, clamping,
window, state round trip; training_error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from smartmine.smart.controller import AdaptiveKappa, training_error


def run(ctrl: AdaptiveKappa, curve, epochs: int) -> list[float]:
    ks = []
    for _ in range(epochs):
        ks.append(ctrl.kappa)
        ctrl.update(curve(ctrl.kappa))
    return ks


def test_first_update_probes_multiplicatively():
    c = AdaptiveKappa()
    assert c.kappa == 16.0
    assert c.update(0.3) == 8.0  # e < target: halve
    c = AdaptiveKappa()
    assert c.update(0.7) == 32.0  # e >= target: double
    assert c.history[0].rule == "step"


def test_fit_matches_hand_computation():
    c = AdaptiveKappa()
    c.update(0.3)  # (16, 0.3) -> 8
    nxt = c.update(0.6)  # (8, 0.6): alpha = (8 - 16) / (0.6 - 0.3) = -80/3, beta = 16 + 80/3 * 0.3 = 24
    assert nxt == pytest.approx(-80 / 3 * 0.5 + 24)
    assert c.history[-1].rule == "fit"


def test_fit_over_window_equals_numpy_polyfit():
    c = AdaptiveKappa(window=3, kappa0=40, kappa_max=1000)
    errors = [0.9, 0.8, 0.55, 0.45, 0.52]
    for e in errors:
        c.update(e)
    recs = c.history
    ks = np.array([r.kappa for r in recs[-3:]])
    es = np.array([r.error for r in recs[-3:]])
    alpha, beta = np.polyfit(es, ks, 1)
    assert recs[-1].rule == "fit"
    assert recs[-1].next_kappa == pytest.approx(np.clip(alpha * 0.5 + beta, 1, 1000))


def test_wrong_sign_fit_falls_back_to_a_step():
    c = AdaptiveKappa()
    c.update(0.3)  # 16 -> 8
    # Error fell as κ fell: alpha > 0 contradicts the model, so step (e < target: halve).
    assert c.update(0.2) == 4.0
    assert c.history[-1].rule == "step"


def test_error_at_target_holds_kappa_when_no_fit_exists():
    c = AdaptiveKappa(tolerance=0.01)
    assert c.update(0.505) == 16.0 and c.history[-1].rule == "hold"
    assert c.update(0.495) == 16.0  # still one distinct κ
    assert c.update(0.52) == 32.0  # outside the tolerance: probe
    c = AdaptiveKappa(tolerance=0.0)
    assert c.update(0.505) == 32.0


def test_degenerate_fit_falls_back_to_a_step():
    c = AdaptiveKappa()
    c.update(0.7)  # 16 -> 32
    assert c.update(0.7) == 64.0  # two κ, one error value: no slope


@pytest.mark.parametrize(
    ("kappa0", "curve", "kappa_star", "epochs"),
    [
        (16.0, lambda k: 1 / (1 + k / 8), 8.0, 4),  # one probe, then the two-point line hits κ* = 8 exactly
        (200.0, lambda k: 1 / (1 + k / 8), 8.0, 30),  # far start: stale window points slow the secant down
        (1.5, lambda k: math.exp(-k / 20), 20 * math.log(2), 15),
        (16.0, lambda k: 1 / (1 + (k / 50) ** 2), 50.0, 15),
    ],
)
def test_reaches_the_kappa_of_the_target_error(kappa0, curve, kappa_star, epochs):
    c = AdaptiveKappa(kappa0=kappa0)
    run(c, curve, epochs)
    assert c.kappa == pytest.approx(kappa_star, rel=1e-3)
    assert curve(c.kappa) == pytest.approx(0.5, abs=1e-3)


def test_target_error_is_respected():
    c = AdaptiveKappa(target_error=0.75)
    run(c, lambda k: 1 / (1 + k / 8), 15)
    assert c.kappa == pytest.approx(8 / 3, rel=1e-3)  # 1 / (1 + k/8) = 0.75


def test_clamps_to_bounds():
    c = AdaptiveKappa()
    ks = run(c, lambda k: 0.95, 6)
    assert ks == [16, 32, 64, 128, 256, 256] and c.kappa == 256
    c = AdaptiveKappa(kappa_min=0.25)  # a κ floor below 1
    ks = run(c, lambda k: 0.0, 8)
    assert ks == [16, 8, 4, 2, 1, 0.5, 0.25, 0.25]
    # Fits that overshoot are clamped too.
    c = AdaptiveKappa()
    c.update(0.3)  # -> 8
    assert c.update(0.31) == 1.0  # alpha = -800, beta = 256: alpha * 0.5 + beta = -144
    c = AdaptiveKappa(kappa_max=100)
    c.update(0.9)  # -> 32
    assert c.update(0.89) == 100.0  # alpha = -1600, beta = 1456: 656


def test_state_round_trip_resumes_exactly():
    curve = lambda k: 1 / (1 + k / 8)  # noqa: E731
    a = AdaptiveKappa(kappa0=100, window=4)
    run(a, curve, 3)
    state = json.loads(json.dumps(a.state_dict()))  # plain types only
    b = AdaptiveKappa()
    b.load_state_dict(state)
    assert b.kappa == a.kappa and b.history == a.history and b.window == 4
    assert run(b, curve, 5) == run(a, curve, 5)


def test_bad_values():
    c = AdaptiveKappa()
    for bad in (float("nan"), -0.1, 1.5, float("inf")):
        with pytest.raises(ValueError, match="error"):
            c.update(bad)
    with pytest.raises(ValueError, match="kappa0"):
        AdaptiveKappa(kappa0=0.5)
    with pytest.raises(ValueError, match="kappa_min"):
        AdaptiveKappa(kappa_min=0)
    with pytest.raises(ValueError, match="kappa_max"):
        AdaptiveKappa(kappa_min=2, kappa_max=1, kappa0=2)
    with pytest.raises(ValueError, match="window"):
        AdaptiveKappa(window=1)
    with pytest.raises(ValueError, match="target_error"):
        AdaptiveKappa(target_error=1.0)
    assert c.history == []


def test_training_error():
    loss = torch.tensor([0.0, 0.3, 0.0, 1.2, 0.5])
    mined = np.array([True, True, False, False, True])
    assert training_error(loss) == pytest.approx(3 / 5)
    assert training_error(loss, mined, count="mined") == pytest.approx(2 / 3)
    assert training_error(loss, tol=0.4) == pytest.approx(2 / 5)
    # Nothing counted is "not measured", not "no error": an epoch that mined nothing must not look perfect.
    assert training_error(torch.zeros(0)) is None
    assert training_error(loss, np.zeros(5, bool), count="mined") is None
    with pytest.raises(ValueError, match="is_mined"):
        training_error(loss, count="mined")
    with pytest.raises(ValueError, match="count"):
        training_error(loss, count="some")
    with pytest.raises(ValueError, match="NaN"):
        training_error(torch.tensor([float("nan")]))
