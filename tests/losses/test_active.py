"""The ``active(embeddings, labels, triplets)`` contract of every loss, against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from smartmine.losses import (
    ContrastiveLoss,
    GlobalLoss,
    MarginLoss,
    RatioTripletLoss,
    TripletLoss,
    WeightedSumLoss,
)

# Points on a line: anchor 0 at 0.0, positive 1 at 0.1, negatives 2 at 0.25 and 3 at 1.0.
X = torch.tensor([[0.0], [0.1], [0.25], [1.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 2])
# d_ap = 0.1 everywhere; d_an = 0.25 (inside 0.1 + 0.2), 1.0 (outside), 0.1 + tiny margins below.
TRIPLETS = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([2, 3]))


@pytest.mark.parametrize(
    "loss",
    [RatioTripletLoss(0.2), TripletLoss(0.2), MarginLoss(alpha=0.2, num_classes=3), ContrastiveLoss(error_margin=0.2),
     GlobalLoss(error_margin=0.2)],
    ids=["ratio", "triplet", "margin", "contrastive", "global"],
)
def test_active_at_margin_point_two(loss):
    # 0.25 < 0.1 + 0.2: active; 1.0 > 0.3: not.
    assert loss.active(X, LABELS, TRIPLETS).tolist() == [True, False]


def test_margin_of_the_rule_is_each_losses_own():
    # d_an − d_ap = 0.15: active with m = 0.2, not with m = 0.1.
    assert TripletLoss(0.1).active(X, None, TRIPLETS).tolist() == [False, False]
    assert MarginLoss(alpha=0.1).active(X, None, TRIPLETS).tolist() == [False, False]
    assert ContrastiveLoss(margin=1.0, error_margin=0.1).active(X, None, TRIPLETS).tolist() == [False, False]
    assert RatioTripletLoss(0.95).active(X, None, TRIPLETS).tolist() == [True, True]  # 1.0 < 0.1 + 0.95


def test_squared_triplet_loss_is_active_where_its_value_is_positive():
    # Squared distances: d_ap² = 0.01, d_an² = 0.0625 and 1.0; 0.0625 < 0.01 + 0.2 → active; 1.0 → not.
    assert TripletLoss(0.2, squared=True).active(X, None, TRIPLETS).tolist() == [True, False]
    assert TripletLoss(0.05, squared=True).active(X, None, TRIPLETS).tolist() == [False, False]


def test_weighted_sum_delegates_to_its_main_term():
    terms = {"global": (GlobalLoss(error_margin=2.0), 1.0), "triplet": (TripletLoss(0.2), 1.0)}
    assert WeightedSumLoss(terms).active(X, LABELS, TRIPLETS).tolist() == [True, True]  # first term: global, m = 2
    assert WeightedSumLoss(terms, main="triplet").active(X, LABELS, TRIPLETS).tolist() == [True, False]
    with pytest.raises(ValueError, match="main: 'tripet' is not one of the terms"):
        WeightedSumLoss(terms, main="tripet")


def test_active_is_empty_for_no_triplets_and_lives_on_the_embeddings_device():
    empty = (torch.empty(0, dtype=torch.long),) * 3
    out = TripletLoss().active(X, None, empty)
    assert out.dtype == torch.bool and out.shape == (0,)
    assert MarginLoss().active(X, None, empty).shape == (0,)


def test_weighted_sum_last_values_are_detached_tensors():
    loss = WeightedSumLoss({"triplet": (TripletLoss(0.2), 1.0)})
    x = X.clone().requires_grad_(True)
    loss(x, LABELS, TRIPLETS)
    values = loss.last_values
    assert set(values) == {"triplet"} and isinstance(values["triplet"], torch.Tensor)
    assert not values["triplet"].requires_grad
    assert float(values["triplet"]) == pytest.approx((0.1 - 0.25 + 0.2) / 2, abs=1e-7)  # mean of 0.05 and 0
