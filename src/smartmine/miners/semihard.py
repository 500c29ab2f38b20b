"""Semi-hard mining [FaceNet] (ALGORITHMS.md §2, "semi-hard")."""

from __future__ import annotations

import torch

from smartmine._validation import Triplets
from smartmine.distances import pairwise_sq_distances
from smartmine.miners.base import InBatchMiner


class SemiHardMiner(InBatchMiner):
    """For every ordered positive pair ``(a, p)``: the closest negative farther than the positive.

    The negative is ``argmin_n D(a, n)`` over other-class ``n`` with ``D(a, n) > D(a, p)`` (strictly); when no
    negative is that far, the hardest (closest) negative of the anchor is used instead. Squared distances are
    compared; ties go to the lowest index, so the choice is deterministic. Emits one triplet per positive pair, i.e.
    ``K (K − 1)`` per class of a P×K batch; ``max_triplets`` caps that.

    Args:
        seed: seed of the generator used by the ``max_triplets`` cap (default None).
        max_triplets: optional cap on triplets per batch (uniform random subset).
    """

    def __init__(self, *, seed: int | None = None, max_triplets: int | None = None):
        super().__init__(seed=seed, max_triplets=max_triplets)

    def _mine(self, x: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Triplets:
        d2 = pairwise_sq_distances(x)
        a, p = pos.nonzero(as_tuple=True)
        rows = d2[a]  # (num_pairs, B): the anchor's distance to every item
        inf = torch.tensor(float("inf"), dtype=d2.dtype, device=d2.device)
        neg_rows = neg[a]
        beyond = neg_rows & (rows > d2[a, p].unsqueeze(1))
        semi = torch.where(beyond, rows, inf)
        hardest = torch.where(neg_rows, rows, inf).argmin(dim=1)
        n = torch.where(beyond.any(dim=1), semi.argmin(dim=1), hardest)
        return a, p, n
