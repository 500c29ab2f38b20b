"""Losses over mined triplets, each called as ``loss(embeddings, labels, triplets)`` (ALGORITHMS.md §1)."""

from smartmine.losses.base import BaseLoss
from smartmine.losses.combined import WeightedSumLoss
from smartmine.losses.contrastive import ContrastiveLoss
from smartmine.losses.global_loss import GlobalLoss
from smartmine.losses.margin import MarginLoss
from smartmine.losses.triplet import RatioTripletLoss, TripletLoss

__all__ = [
    "BaseLoss",
    "ContrastiveLoss",
    "GlobalLoss",
    "MarginLoss",
    "RatioTripletLoss",
    "TripletLoss",
    "WeightedSumLoss",
]
