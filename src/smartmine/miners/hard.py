"""Batch-hard mining (ALGORITHMS.md §2, "hard"): the hardest positive and hardest negative of every anchor."""

from __future__ import annotations

import torch

from smartmine._validation import Triplets
from smartmine.distances import pairwise_sq_distances
from smartmine.miners.base import InBatchMiner


class HardMiner(InBatchMiner):
    """One triplet per anchor with a positive: its farthest positive and its nearest negative in the batch.

    Squared Euclidean distances are compared (same order as plain ones). Ties go to the lowest index, so the miner is
    deterministic; ``seed`` only matters for the ``max_triplets`` subsample.

    Args:
        seed: seed of the generator used by the ``max_triplets`` cap (default None).
        max_triplets: optional cap on triplets per batch (uniform random subset).
    """

    def __init__(self, *, seed: int | None = None, max_triplets: int | None = None):
        super().__init__(seed=seed, max_triplets=max_triplets)

    def _mine(self, x: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Triplets:
        d2 = pairwise_sq_distances(x)
        anchors = pos.any(dim=1).nonzero().flatten()
        d2a = d2[anchors]
        inf = torch.tensor(float("inf"), dtype=d2.dtype, device=d2.device)
        # -1 marks excluded columns for the arg-max (every distance is >= 0, and each anchor has a positive).
        p = torch.where(pos[anchors], d2a, torch.full_like(d2a, -1.0)).argmax(dim=1)
        n = torch.where(neg[anchors], d2a, inf).argmin(dim=1)
        return anchors, p, n
