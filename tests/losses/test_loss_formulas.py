"""Each loss against an independent NumPy re-derivation of its formula and against hand-computed cases.

NumPy references are written from ALGORITHMS.md §1 directly (float64, no torch), on random unit vectors.
The hand-computed cases use points on the unit circle, where the chord between angles θ₁, θ₂ is 2·sin(|θ₁ − θ₂|/2):
30° → (√6 − √2)/2, 60° → 1, 90° → √2, 180° → 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smartmine.losses.combined import WeightedSumLoss
from smartmine.losses.contrastive import ContrastiveLoss
from smartmine.losses.global_loss import GlobalLoss
from smartmine.losses.margin import MarginLoss
from smartmine.losses.triplet import RatioTripletLoss, TripletLoss

EPS = 1e-8
# float(loss) on a graph-connected scalar is what these tests mean; torch warns about it for requires-grad tensors.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


# ---------------------------------------------------------------------------------------------------------------- data
def random_batch(seed: int, n: int = 24, dim: int = 8, classes: int = 6, t: int = 50):
    """Unit vectors (float64), labels, and valid random triplets (y[a] == y[p], a != p, y[n] != y[a])."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.arange(n) % classes
    a, p, q = [], [], []
    while len(a) < t:
        i, j, k = rng.integers(0, n, size=3)
        if i != j and y[i] == y[j] and y[k] != y[i]:
            a.append(i), p.append(j), q.append(k)
    return x, y, (np.array(a), np.array(p), np.array(q))


def as_torch(x, y, trip):
    return torch.from_numpy(x), torch.from_numpy(y), tuple(torch.from_numpy(t) for t in trip)


def np_dist(x, i, j, squared=False):
    d2 = ((x[i] - x[j]) ** 2).sum(axis=1)
    return d2 if squared else np.sqrt(d2 + EPS)


# ------------------------------------------------------------------------------------------------- NumPy references
def np_ratio(x, trip, m):
    a, p, n = trip
    return np.maximum(0.0, 1.0 - np_dist(x, a, n) / (np_dist(x, a, p) + m))


def np_triplet(x, trip, m, squared):
    a, p, n = trip
    return np.maximum(0.0, np_dist(x, a, p, squared) - np_dist(x, a, n, squared) + m)


def np_global(x, trip, lam, t):
    a, p, n = trip
    dp, dn = np_dist(x, a, p, True) / 4, np_dist(x, a, n, True) / 4
    return dp.var() + dn.var() + lam * max(0.0, dp.mean() - dn.mean() + t)  # np.var is the population variance


def np_margin(x, y, trip, alpha, beta, nu):
    """``beta``: a float (shared) or an array indexed by class."""
    a, p, n = trip
    b = np.asarray(beta)[y[a]] if np.ndim(beta) else np.full(len(a), beta)
    pos = np.maximum(0.0, np_dist(x, a, p) - b + alpha)
    neg = np.maximum(0.0, b - np_dist(x, a, n) + alpha)
    count = (pos > 0).sum() + (neg > 0).sum()
    return 0.0 if count == 0 else (pos.sum() + neg.sum() + nu * b.sum()) / count


def np_contrastive(x, trip, alpha):
    a, p, n = trip
    pairs = np.concatenate([np_dist(x, a, p, True), np.maximum(0.0, alpha - np_dist(x, a, n)) ** 2])
    return pairs.mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_ratio_triplet_matches_numpy(seed, margin):
    x, y, trip = random_batch(seed)
    xt, yt, tt = as_torch(x, y, trip)
    loss = RatioTripletLoss(margin=margin)
    ref = np_ratio(x, trip, margin)
    np.testing.assert_allclose(loss.per_triplet(xt, tt).numpy(), ref, rtol=1e-12, atol=1e-12)
    assert float(loss(xt, yt, tt)) == pytest.approx(ref.mean(), rel=1e-12, abs=1e-14)
    assert 0 < (ref > 0).sum() < len(ref)  # the case exercises both sides of the hinge


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", [0.1, 0.3])
def test_triplet_matches_numpy(seed, squared, margin):
    x, y, trip = random_batch(seed)
    xt, yt, tt = as_torch(x, y, trip)
    loss = TripletLoss(margin=margin, squared=squared)
    ref = np_triplet(x, trip, margin, squared)
    np.testing.assert_allclose(loss.per_triplet(xt, tt).numpy(), ref, rtol=1e-12, atol=1e-12)
    assert float(loss(xt, yt, tt)) == pytest.approx(ref.mean(), rel=1e-12)
    nz = ref[ref > 0]
    assert float(TripletLoss(margin, squared, reduction="mean_nonzero")(xt, yt, tt)) == pytest.approx(nz.mean())
    assert float(TripletLoss(margin, squared, reduction="sum")(xt, yt, tt)) == pytest.approx(ref.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("lam", "t"), [(1.0, 0.01), (0.5, 0.3), (2.0, -1.0)])
def test_global_matches_numpy(seed, lam, t):
    x, y, trip = random_batch(seed)
    xt, yt, tt = as_torch(x, y, trip)
    assert float(GlobalLoss(lam=lam, t=t)(xt, yt, tt)) == pytest.approx(np_global(x, trip, lam, t), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("alpha", "beta", "nu"), [(0.2, 1.2, 0.0), (0.1, 0.9, 0.05), (0.3, 1.4, 0.5)])
def test_margin_scalar_beta_matches_numpy(seed, alpha, beta, nu):
    x, y, trip = random_batch(seed)
    xt, yt, tt = as_torch(x, y, trip)
    loss = MarginLoss(alpha=alpha, beta=beta, nu=nu).double()
    beta = float(np.float32(beta))  # β is created as a float32 parameter, then widened by .double()
    assert float(loss(xt, yt, tt)) == pytest.approx(np_margin(x, y, trip, alpha, beta, nu), rel=1e-12)
    assert float(loss(xt, None, tt)) == pytest.approx(np_margin(x, y, trip, alpha, beta, nu), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_margin_per_class_beta_matches_numpy(seed):
    x, y, trip = random_batch(seed, classes=6)
    xt, yt, tt = as_torch(x, y, trip)
    betas = np.linspace(0.8, 1.3, 6)
    loss = MarginLoss(alpha=0.2, nu=0.1, num_classes=6).double()
    with torch.no_grad():
        loss.beta.copy_(torch.from_numpy(betas))
    assert float(loss(xt, yt, tt)) == pytest.approx(np_margin(x, y, trip, 0.2, betas, 0.1), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5])
def test_contrastive_matches_numpy(seed, alpha):
    x, y, trip = random_batch(seed)
    xt, yt, tt = as_torch(x, y, trip)
    assert float(ContrastiveLoss(margin=alpha)(xt, yt, tt)) == pytest.approx(np_contrastive(x, trip, alpha), rel=1e-12)


def test_ratio_positive_exactly_when_negative_inside_margin():
    # [SM]: J_t > 0  ⇔  D(a,n) < D(a,p) + m, the same condition as the plain difference hinge.
    x, y, trip = random_batch(7, t=200)
    xt, _, tt = as_torch(x, y, trip)
    a, p, n = trip
    expected = np_dist(x, a, n) < np_dist(x, a, p) + 0.2
    np.testing.assert_array_equal(RatioTripletLoss(0.2).per_triplet(xt, tt).numpy() > 0, expected)
    np.testing.assert_array_equal(TripletLoss(0.2).per_triplet(xt, tt).numpy() > 0, expected)


# -------------------------------------------------------------------------------------------- hand-computed cases
def circle(*degrees: float) -> torch.Tensor:
    r = np.deg2rad(np.array(degrees))
    return torch.from_numpy(np.stack([np.cos(r), np.sin(r)], axis=1))


# Points: 0: 0°, 1: 60°, 2: 90°, 3: 30°, 4: 180°.
PTS = circle(0, 60, 90, 30, 180)
LABELS = torch.tensor([0, 0, 1, 2, 1])  # only used by the losses that need labels; triplets below are explicit
TRIP = (torch.tensor([0, 0, 2]), torch.tensor([1, 1, 4]), torch.tensor([3, 2, 3]))
# D(a,p): 1, 1, √2 ;  D(a,n): C30, √2, 1  with C30 = 2 sin 15° = (√6 − √2)/2
C30 = (math.sqrt(6) - math.sqrt(2)) / 2
SQ2 = math.sqrt(2)


def test_hand_ratio_and_triplet():
    per = RatioTripletLoss(0.2).per_triplet(PTS, TRIP).tolist()
    assert per == pytest.approx([1 - C30 / 1.2, 0.0, 1 - 1 / (SQ2 + 0.2)], abs=1e-7)
    assert float(RatioTripletLoss(0.2)(PTS, LABELS, TRIP)) == pytest.approx(sum(per) / 3, abs=1e-7)
    per = TripletLoss(0.2).per_triplet(PTS, TRIP).tolist()
    assert per == pytest.approx([1 - C30 + 0.2, 0.0, SQ2 - 1 + 0.2], abs=1e-7)
    # Squared: D²(30°) = 2 − √3, D²(60°) = 1, D²(90°) = 2.
    per = TripletLoss(0.2, squared=True).per_triplet(PTS, TRIP).tolist()
    assert per == pytest.approx([1 - (2 - math.sqrt(3)) + 0.2, 0.0, 2 - 1 + 0.2], abs=1e-12)


def test_hand_global():
    # d⁺ = D²/4 = 1/4, 1/4, 1/2 → μ⁺ = 1/3, σ⁺² = (2·(1/12)² + (1/6)²)/3 = 1/72
    # d⁻ = (2 − √3)/4, 1/2, 1/4
    dn = [(2 - math.sqrt(3)) / 4, 0.5, 0.25]
    mu_n = sum(dn) / 3
    var_n = sum((d - mu_n) ** 2 for d in dn) / 3
    expected = 1 / 72 + var_n + 1.0 * max(0.0, 1 / 3 - mu_n + 0.01)
    assert float(GlobalLoss()(PTS, LABELS, TRIP)) == pytest.approx(expected, abs=1e-12)
    # A large t only moves the hinge: λ·(μ⁺ − μ⁻ + t) with λ = 2.
    assert float(GlobalLoss(lam=2.0, t=0.5)(PTS, LABELS, TRIP)) == pytest.approx(
        1 / 72 + var_n + 2.0 * (1 / 3 - mu_n + 0.5), abs=1e-12
    )


def test_hand_margin_value_and_beta_gradient():
    # α = 0.2, β = 1.1 (chosen so that no term sits on its kink):
    #   (0,1,3): pos = 1 − 1.1 + 0.2 = 0.1 ;  neg = 1.1 − C30 + 0.2
    #   (0,1,2): pos = 0.1 ;                  neg = 1.1 − √2 + 0.2 < 0 → 0
    #   (2,4,3): pos = √2 − 1.1 + 0.2 ;       neg = 1.1 − 1 + 0.2 = 0.3
    # 3 active positives + 2 active negatives = 5.
    hinge = 0.1 + (1.3 - C30) + 0.1 + (SQ2 - 0.9) + 0.3
    for nu in (0.0, 0.1):
        loss = MarginLoss(alpha=0.2, beta=1.1, nu=nu).double()
        with torch.no_grad():
            loss.beta.fill_(1.1)  # exactly the float64 1.1 of the hand computation, not float32(1.1)
        value = loss(PTS, LABELS, TRIP)
        assert float(value) == pytest.approx((hinge + nu * 3 * 1.1) / 5, abs=1e-7)
        value.backward()
        # ∂/∂β: each active pos contributes −1, each active neg +1, the regulariser ν per triplet: (−3 + 2 + 3ν)/5.
        assert float(loss.beta.grad) == pytest.approx((-3 + 2 + 3 * nu) / 5, abs=1e-12)


def test_hand_margin_nothing_active_is_zero():
    # β = 1.2, α = 0.05: positives at D = 1 are inside β − α, negatives at D = 2 beyond β + α.
    x = circle(0, 60, 180)
    loss = MarginLoss(alpha=0.05, beta=1.2, nu=0.5)
    value = loss(x, torch.tensor([0, 0, 1]), (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    assert float(value) == 0.0
    value.backward()
    assert float(loss.beta.grad) == 0.0


def test_hand_contrastive():
    # pos: D² = 1, 1, 2; neg with α = 1.2: (1.2 − C30)², (1.2 − √2 → 0)², (1.2 − 1)² = 0.04; mean over 6 pairs.
    expected = (1 + 1 + 2 + (1.2 - C30) ** 2 + 0.0 + 0.04) / 6
    assert float(ContrastiveLoss(margin=1.2)(PTS, LABELS, TRIP)) == pytest.approx(expected, abs=1e-7)
    assert float(ContrastiveLoss(margin=1.2, reduction="sum")(PTS, LABELS, TRIP)) == pytest.approx(6 * expected)
    assert float(ContrastiveLoss(margin=1.2, reduction="mean_nonzero")(PTS, LABELS, TRIP)) == pytest.approx(
        6 * expected / 5
    )


# --------------------------------------------------------------------------------------------------------- combined
def test_weighted_sum_total_terms_and_betas():
    x, y, trip = random_batch(4)
    xt, yt, tt = as_torch(x, y, trip)
    xt.requires_grad_(True)
    margin = MarginLoss(num_classes=6)
    combo = WeightedSumLoss(
        {"triplet": (RatioTripletLoss(), 1.0), "global": (GlobalLoss(), 0.5), "margin": (margin, 2.0)}
    )
    assert combo.last_terms == {}
    total = combo(xt, yt, tt)
    ref_t, ref_g = np_ratio(x, trip, 0.2).mean(), np_global(x, trip, 1.0, 0.01)
    ref_m = np_margin(x, y, trip, 0.2, 1.2, 0.0)
    assert float(total) == pytest.approx(ref_t + 0.5 * ref_g + 2.0 * ref_m, rel=1e-6)
    terms = combo.last_terms
    assert list(terms) == ["triplet", "global", "margin"]
    assert terms["triplet"] == pytest.approx(ref_t, rel=1e-12)
    assert terms["global"] == pytest.approx(ref_g, rel=1e-12)
    assert terms["margin"] == pytest.approx(ref_m, rel=1e-6)  # β is a float32 parameter
    assert all(isinstance(v, float) for v in terms.values())
    assert combo.beta_parameters() == [margin.beta]
    assert combo["margin"] is margin
    assert "losses.margin.beta" in combo.state_dict()
    total.backward()
    assert xt.grad is not None and margin.beta.grad is not None


def test_weighted_sum_without_beta_and_zero_weight():
    x, y, trip = random_batch(5)
    xt, yt, tt = as_torch(x, y, trip)
    combo = WeightedSumLoss({"triplet": (TripletLoss(), 1.0), "global": (GlobalLoss(), 0.0)})
    assert combo.beta_parameters() == []
    assert float(combo(xt, yt, tt)) == pytest.approx(np_triplet(x, trip, 0.2, False).mean(), rel=1e-12)
    assert combo.last_terms["global"] == pytest.approx(np_global(x, trip, 1.0, 0.01), rel=1e-12)  # still logged
    assert MarginLoss(learn_beta=False).beta_parameters() == []
