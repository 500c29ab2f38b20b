"""Gradients (analytic β gradient of the margin loss, gradcheck in float64) and differential tests against
pytorch-metric-learning (PML) on identical inputs and identical triplets.

Comparing like with like with PML:

* PML's ``LpDistance`` L2-normalises embeddings itself (``normalize_embeddings=True``) and uses ``torch.cdist``
  without an ``eps``. We feed *unnormalised* vectors to PML and their normalised rows to smartmine (which never
  normalises: the model's head does); distances then agree up to the ``sqrt(D² + 1e-8)`` offset, about 5e-9 at
  ``D ≈ 1``, hence ``atol=1e-7``.
* PML's ``TripletMarginLoss`` reduces with ``AvgNonZeroReducer`` (the mean over triplets with a non-zero loss);
  smartmine's ``TripletLoss`` defaults to the plain mean. We compare ``reduction="mean_nonzero"`` with PML's default
  and ``reduction="mean"`` with PML's ``MeanReducer``.
* PML's ``MarginLoss`` reduces with ``DivisorReducer``: ``Σ(pos + neg) / (#pos > 0 + #neg > 0)``, the same as the
  spec. Its β regulariser is ``ν Σ_i β_{c(a_i)} / count`` for per-class β (the spec's), but ``ν · β`` added once,
  undivided, for a scalar β (and only when β is learned). The scalar case with ``ν > 0`` is therefore checked
  against PML plus that documented correction.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.distances import LpDistance

from smartmine.losses.contrastive import ContrastiveLoss
from smartmine.losses.global_loss import GlobalLoss
from smartmine.losses.margin import MarginLoss
from smartmine.losses.triplet import RatioTripletLoss, TripletLoss

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def batch(seed: int, n: int = 32, dim: int = 16, classes: int = 8, t: int = 80, normalised: bool = True):
    """float64 embeddings, labels in [0, classes), and valid random triplets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    if normalised:
        x = torch.nn.functional.normalize(x, dim=1)
    y = torch.arange(n) % classes
    a, p, q = [], [], []
    while len(a) < t:
        i, j, k = torch.randint(0, n, (3,), generator=g).tolist()
        if i != j and y[i] == y[j] and y[k] != y[i]:
            a.append(i), p.append(j), q.append(k)
    return x, y, (torch.tensor(a), torch.tensor(p), torch.tensor(q))


# ------------------------------------------------------------------------------------------------ margin β gradient
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_margin_beta_gradient_scalar_is_analytic(seed, nu):
    x, y, (a, p, n) = batch(seed)
    loss = MarginLoss(alpha=0.2, beta=1.0, nu=nu).double()
    value = loss(x, y, (a, p, n))
    value.backward()
    # Independent count in NumPy: which hinge terms are active at β = 1.
    xn = x.numpy()
    d_ap = np.sqrt(((xn[a] - xn[p]) ** 2).sum(1) + 1e-8)
    d_an = np.sqrt(((xn[a] - xn[n]) ** 2).sum(1) + 1e-8)
    n_pos, n_neg = int((d_ap - 1.0 + 0.2 > 0).sum()), int((1.0 - d_an + 0.2 > 0).sum())
    assert n_pos > 0 and n_neg > 0
    expected = (-n_pos + n_neg + nu * len(a)) / (n_pos + n_neg)
    assert float(loss.beta.grad) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_margin_beta_gradient_per_class_is_analytic(seed):
    x, y, (a, p, n) = batch(seed, classes=8)
    nu = 0.2
    loss = MarginLoss(alpha=0.2, nu=nu, num_classes=8).double()
    betas = torch.linspace(0.9, 1.3, 8, dtype=torch.float64)
    with torch.no_grad():
        loss.beta.copy_(betas)
    loss(x, y, (a, p, n)).backward()
    xn, yn, bn = x.numpy(), y.numpy(), betas.numpy()
    b = bn[yn[a]]
    pos_active = np.sqrt(((xn[a] - xn[p]) ** 2).sum(1) + 1e-8) - b + 0.2 > 0
    neg_active = b - np.sqrt(((xn[a] - xn[n]) ** 2).sum(1) + 1e-8) + 0.2 > 0
    count = pos_active.sum() + neg_active.sum()
    expected = np.zeros(8)
    for i, c in enumerate(yn[a]):
        expected[c] += -float(pos_active[i]) + float(neg_active[i]) + nu
    np.testing.assert_allclose(loss.beta.grad.numpy(), expected / count, atol=1e-12)


def test_margin_gradcheck_embeddings_and_beta():
    x, y, trip = batch(3, n=12, dim=4, classes=3, t=10)
    loss = MarginLoss(alpha=0.2, beta=1.1, nu=0.1, num_classes=3).double()
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y, trip), (xr,))
    beta = loss.beta.detach().clone().requires_grad_(True)

    def as_function_of_beta(b):
        return torch.func.functional_call(loss, {"beta": b}, (x, y, trip))

    assert torch.autograd.gradcheck(as_function_of_beta, (beta,))


@pytest.mark.parametrize(
    "loss",
    [RatioTripletLoss(0.2), TripletLoss(0.2), TripletLoss(0.2, squared=True), GlobalLoss(), ContrastiveLoss(1.0)],
    ids=["ratio", "triplet", "triplet_sq", "global", "contrastive"],
)
def test_gradcheck_embeddings(loss):
    x, y, trip = batch(4, n=12, dim=4, classes=3, t=10)
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y, trip), (xr,))


@pytest.mark.parametrize(
    "loss", [RatioTripletLoss(0.0), TripletLoss(0.2), MarginLoss(), ContrastiveLoss(), GlobalLoss()]
)
def test_gradient_finite_at_zero_distance(loss):
    # Anchor and positive coincide: sqrt(D² + eps) keeps ∂D/∂x finite (0) instead of 0/0.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    trip = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    value = loss(x, torch.tensor([0, 0, 1]), trip)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------------ pytorch-metric-learning: triplet
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_triplet_matches_pml_triplet_margin_loss(seed, margin):
    raw, y, trip = batch(seed, normalised=False)
    x = torch.nn.functional.normalize(raw, dim=1)
    pml_default = pml_losses.TripletMarginLoss(margin=margin)  # AvgNonZeroReducer
    ours = TripletLoss(margin=margin, reduction="mean_nonzero")(x, y, trip)
    assert float(ours) == pytest.approx(float(pml_default(raw, y, trip)), abs=1e-7)
    pml_mean = pml_losses.TripletMarginLoss(margin=margin, reducer=pml_reducers.MeanReducer())
    assert float(TripletLoss(margin=margin)(x, y, trip)) == pytest.approx(float(pml_mean(raw, y, trip)), abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_squared_triplet_matches_pml_with_squared_distance(seed):
    raw, y, trip = batch(seed, normalised=False)
    x = torch.nn.functional.normalize(raw, dim=1)
    pml = pml_losses.TripletMarginLoss(margin=0.3, distance=LpDistance(power=2), reducer=pml_reducers.MeanReducer())
    ours = TripletLoss(margin=0.3, squared=True)(x, y, trip)
    assert float(ours) == pytest.approx(float(pml(raw, y, trip)), abs=1e-10)


def test_triplet_gradient_matches_pml():
    raw, y, trip = batch(5, normalised=False)
    raw_ours = raw.clone().requires_grad_(True)
    raw_pml = raw.clone().requires_grad_(True)
    # Normalise inside the graph for smartmine too, so both gradients are w.r.t. the same raw vectors.
    TripletLoss(0.2)(torch.nn.functional.normalize(raw_ours, dim=1), y, trip).backward()
    pml_losses.TripletMarginLoss(margin=0.2, reducer=pml_reducers.MeanReducer())(raw_pml, y, trip).backward()
    torch.testing.assert_close(raw_ours.grad, raw_pml.grad, atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------------------------- pytorch-metric-learning: margin
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("alpha", "beta"), [(0.2, 1.2), (0.1, 1.0), (0.3, 0.8)])
def test_margin_scalar_beta_matches_pml(seed, alpha, beta):
    raw, y, trip = batch(seed, normalised=False)
    x = torch.nn.functional.normalize(raw, dim=1)
    pml = pml_losses.MarginLoss(margin=alpha, beta=beta, nu=0.0, learn_beta=True)
    ours = MarginLoss(alpha=alpha, beta=beta, nu=0.0)
    assert float(ours(x, y, trip)) == pytest.approx(float(pml(raw, y, trip)), abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_margin_scalar_beta_with_nu_differs_from_pml_as_documented(seed):
    raw, y, trip = batch(seed, normalised=False)
    x = torch.nn.functional.normalize(raw, dim=1)
    alpha, beta, nu = 0.2, 1.1, 0.4
    pml_value = float(pml_losses.MarginLoss(margin=alpha, beta=beta, nu=nu, learn_beta=True)(raw, y, trip))
    value = float(MarginLoss(alpha=alpha, beta=beta, nu=nu)(x, y, trip))
    b32 = float(np.float32(beta))  # both libraries hold β as float32
    a, p, n = trip
    n_pos = int(((x[a] - x[p]).norm(dim=1) - b32 + alpha > 0).sum())
    n_neg = int((b32 - (x[a] - x[n]).norm(dim=1) + alpha > 0).sum())
    # PML: hinge/count + ν·β ;  spec: hinge/count + ν·T·β/count.
    assert value == pytest.approx(pml_value - nu * b32 + nu * len(a) * b32 / (n_pos + n_neg), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_margin_per_class_beta_matches_pml_value_and_beta_gradient(seed, nu):
    raw, y, trip = batch(seed, normalised=False, classes=8)
    x = torch.nn.functional.normalize(raw, dim=1)
    pml = pml_losses.MarginLoss(margin=0.2, beta=1.2, nu=nu, learn_beta=True, num_classes=8)
    ours = MarginLoss(alpha=0.2, beta=1.2, nu=nu, num_classes=8)
    init = torch.linspace(0.9, 1.4, 8)
    with torch.no_grad():
        pml.beta.copy_(init)
        ours.beta.copy_(init)
    v_pml, v_ours = pml(raw, y, trip), ours(x, y, trip)
    assert float(v_ours) == pytest.approx(float(v_pml), abs=1e-6)
    v_pml.backward()
    v_ours.backward()
    torch.testing.assert_close(ours.beta.grad, pml.beta.grad, atol=1e-6, rtol=1e-5)


def test_margin_nothing_active_matches_pml_zero():
    # α = 0, β = 1 and only triplets with D(a,p) < 1 < D(a,n): every hinge is inactive, so L = 0 in both libraries.
    raw, y, (a, p, n) = batch(0, dim=3, normalised=False)
    x = torch.nn.functional.normalize(raw, dim=1)
    keep = ((x[a] - x[p]).norm(dim=1) < 0.99) & ((x[a] - x[n]).norm(dim=1) > 1.01)
    assert keep.any()
    sub = (a[keep], p[keep], n[keep])
    assert float(pml_losses.MarginLoss(margin=0.0, beta=1.0, learn_beta=True)(raw, y, sub)) == 0.0
    assert float(MarginLoss(alpha=0.0, beta=1.0, nu=0.5)(x, y, sub)) == 0.0
