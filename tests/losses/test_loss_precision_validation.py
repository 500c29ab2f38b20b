"""Precision (float32/float64, half inputs, CPU autocast with bfloat16/float16), empty triplets, and bad input.

Expectations are float64 evaluations of the same losses on the same (rounded) inputs, which the formula tests pin to
NumPy; the point here is that lower precision changes the result only by the rounding of its inputs.
"""

from __future__ import annotations

import pytest
import torch

from smartmine.losses.combined import WeightedSumLoss
from smartmine.losses.contrastive import ContrastiveLoss
from smartmine.losses.global_loss import GlobalLoss
from smartmine.losses.margin import MarginLoss
from smartmine.losses.triplet import RatioTripletLoss, TripletLoss

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

FACTORIES = {
    "ratio": lambda: RatioTripletLoss(0.2),
    "triplet": lambda: TripletLoss(0.2),
    "triplet_sq": lambda: TripletLoss(0.2, squared=True),
    "global": lambda: GlobalLoss(),
    "margin": lambda: MarginLoss(),
    "margin_per_class": lambda: MarginLoss(nu=0.1, num_classes=4),
    "contrastive": lambda: ContrastiveLoss(1.0),
    "combined": lambda: WeightedSumLoss({"t": (RatioTripletLoss(), 1.0), "g": (GlobalLoss(), 1.0)}),
}
NAMES = list(FACTORIES)


def batch(seed: int = 0, n: int = 16, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(n) % 4
    # All (a, p) pairs of each class with the next-class item as negative: valid, deterministic, 24 triplets.
    a, p, q = [], [], []
    for i in range(n):
        for j in range(n):
            if i != j and y[i] == y[j]:
                a.append(i), p.append(j), q.append((i + 1) % n)
    return x, y, (torch.tensor(a), torch.tensor(p), torch.tensor(q))


def reference(name: str, x: torch.Tensor, y: torch.Tensor, trip) -> float:
    """The float64 value of the loss on ``x`` widened to float64."""
    return float(FACTORIES[name]().double()(x.double(), y, trip))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_precision_dtypes(name, dtype):
    x64, y, trip = batch()
    x = x64.to(dtype).requires_grad_(True)
    loss = FACTORIES[name]()
    value = loss(x, y, trip)
    assert value.dtype == dtype and value.dim() == 0
    expected = reference(name, x.detach(), y, trip)
    assert float(value) == pytest.approx(expected, rel=1e-5 if dtype == torch.float32 else 1e-6, abs=1e-6)
    value.backward()
    assert x.grad.dtype == dtype and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_autocast_cpu_half(name, half):
    """Embeddings produced by a layer under CPU autocast are half; the loss is float32 and matches float64."""
    x64, y, trip = batch()
    layer = torch.nn.Linear(8, 8, dtype=torch.float32)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(8))
        layer.bias.zero_()
    loss = FACTORIES[name]()
    with torch.autocast("cpu", dtype=half):
        emb = layer(x64.float())
        assert emb.dtype == half  # the embeddings really are half precision
        value = loss(emb, y, trip)
    assert value.dtype == torch.float32
    # Upcasting inside the loss means the only error left is the rounding of the embeddings themselves.
    assert float(value) == pytest.approx(reference(name, emb.detach(), y, trip), rel=1e-5, abs=1e-6)
    value.backward()
    assert bool(torch.isfinite(layer.weight.grad).all()) and float(layer.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_inputs_without_autocast(name, half):
    x64, y, trip = batch(1)
    x = x64.to(half).requires_grad_(True)
    value = FACTORIES[name]()(x, y, trip)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(reference(name, x.detach(), y, trip), rel=1e-5, abs=1e-6)
    value.backward()
    assert x.grad.dtype == half and bool(torch.isfinite(x.grad.float()).all())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_empty_triplets_give_connected_zero(name, dtype):
    x64, y, _ = batch()
    x = x64.to(dtype).requires_grad_(True)
    loss = FACTORIES[name]()
    empty = torch.empty(0, dtype=torch.long)
    value = loss(x, y, (empty, empty, empty))
    assert float(value) == 0.0 and value.requires_grad
    value.backward()
    assert float(x.grad.abs().sum()) == 0.0  # a real (zero) gradient, not None and not NaN
    for param in loss.parameters():  # β of the margin loss gets a zero gradient too
        assert param.grad is not None and float(param.grad.abs().sum()) == 0.0


def test_per_triplet_empty_and_dtypes():
    x64, _, trip = batch()
    empty = torch.empty(0, dtype=torch.long)
    assert RatioTripletLoss().per_triplet(x64, (empty, empty, empty)).shape == (0,)
    assert TripletLoss().per_triplet(x64.float(), trip).dtype == torch.float32
    assert RatioTripletLoss().per_triplet(x64.bfloat16(), trip).dtype == torch.float32
    assert TripletLoss().per_triplet(x64, trip).shape == (len(trip[0]),)


def test_numpy_inputs_accepted():
    x64, y, trip = batch()
    expected = float(RatioTripletLoss()(x64, y, trip))
    value = RatioTripletLoss()(x64.numpy(), y.numpy(), tuple(t.numpy() for t in trip))
    assert float(value) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------- bad input
def _bad_cases():
    x, y, trip = batch()
    a, p, n = trip
    nan_x = x.clone()
    nan_x[3, 1] = float("nan")
    inf_x = x.clone()
    inf_x[2, 0] = float("inf")
    return {
        "labels_length": ((x, y[:-1], trip), "labels"),
        "labels_float": ((x, y.double(), trip), "labels"),
        "labels_2d": ((x, y[:, None], trip), "labels"),
        "embeddings_1d": ((x[0], y, trip), "embeddings"),
        "embeddings_3d": ((x[None], y, trip), "embeddings"),
        "embeddings_int": ((torch.ones(16, 8, dtype=torch.long), y, trip), "embeddings"),
        "embeddings_nan": ((nan_x, y, trip), "embeddings"),
        "embeddings_inf": ((inf_x, y, trip), "embeddings"),
        "triplets_out_of_range": ((x, y, (a, p, n + 16)), "triplets"),
        "triplets_negative": ((x, y, (a - 100, p, n)), "triplets"),
        "triplets_lengths": ((x, y, (a, p[:-1], n)), "triplets"),
        "triplets_float": ((x, y, (a.double(), p, n)), "triplets"),
        "triplets_not_a_triple": ((x, y, (a, p)), "triplets"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_value_error_naming_argument(name, case):
    args, argument = BAD[case]
    with pytest.raises(ValueError, match=argument):
        FACTORIES[name]()(*args)


@pytest.mark.parametrize("loss", [RatioTripletLoss(), TripletLoss()], ids=["ratio", "triplet"])
def test_per_triplet_validates(loss):
    x, _, (a, p, n) = batch()
    with pytest.raises(ValueError, match="triplets"):
        loss.per_triplet(x, (a, p, n + 100))
    with pytest.raises(ValueError, match="embeddings"):
        loss.per_triplet(x[0], (a, p, n))


def test_margin_labels_must_lie_in_num_classes():
    x, y, trip = batch()
    loss = MarginLoss(num_classes=4)
    with pytest.raises(ValueError, match=r"labels: .*\[0, 4\)"):
        loss(x, y + 1, trip)  # label 4 ≥ num_classes
    with pytest.raises(ValueError, match="labels"):
        loss(x, y - 1, trip)  # label −1
    with pytest.raises(ValueError, match="labels"):
        loss(x, None, trip)  # per-class β cannot be indexed without labels
    empty = torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        loss(x, y + 1, (empty, empty, empty))  # checked even when there is nothing to compute


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: RatioTripletLoss(margin=-0.1), "margin"),
        (lambda: RatioTripletLoss(eps=0.0), "eps"),
        (lambda: RatioTripletLoss(reduction="max"), "reduction"),
        (lambda: TripletLoss(margin=float("nan")), "margin"),
        (lambda: TripletLoss(squared=1), "squared"),
        (lambda: GlobalLoss(lam=-1.0), "lam"),
        (lambda: GlobalLoss(t=float("inf")), "t"),
        (lambda: MarginLoss(alpha=-0.2), "alpha"),
        (lambda: MarginLoss(beta="big"), "beta"),
        (lambda: MarginLoss(nu=-1.0), "nu"),
        (lambda: MarginLoss(num_classes=0), "num_classes"),
        (lambda: MarginLoss(num_classes=2.5), "num_classes"),
        (lambda: MarginLoss(learn_beta="yes"), "learn_beta"),
        (lambda: ContrastiveLoss(margin=True), "margin"),
        (lambda: WeightedSumLoss({}), "terms"),
        (lambda: WeightedSumLoss({"a.b": (GlobalLoss(), 1.0)}), "terms"),
        (lambda: WeightedSumLoss({"g": GlobalLoss()}), "terms"),
        (lambda: WeightedSumLoss({"g": (GlobalLoss(), -1.0)}), "weight"),
    ],
)
def test_bad_hyperparameters(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_weighted_sum_last_terms_expose_nonfinite_member():
    """A member that returns NaN is named by ``last_terms`` (the trainer reports it)."""

    class Broken(torch.nn.Module):
        def forward(self, embeddings, labels, triplets):
            return embeddings.sum() * float("nan")

    x, y, trip = batch()
    combo = WeightedSumLoss({"ok": (GlobalLoss(), 1.0), "broken": (Broken(), 1.0)})
    assert not bool(torch.isfinite(combo(x, y, trip)))
    terms = combo.last_terms
    assert terms["ok"] == terms["ok"] and terms["broken"] != terms["broken"]  # finite vs NaN
