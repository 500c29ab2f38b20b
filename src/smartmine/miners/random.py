"""Random in-batch triplets: the baseline miner (ALGORITHMS.md §2, "random")."""

from __future__ import annotations

import torch

from smartmine._validation import Triplets, check_positive_int
from smartmine.miners.base import InBatchMiner


class RandomMiner(InBatchMiner):
    """Each anchor that has a positive in the batch gets ``triplets_per_anchor`` random triplets.

    The positive is drawn uniformly from the anchor's other same-class items and the negative uniformly from the
    other-class items, independently per triplet (with replacement, so a small class may repeat a positive).

    Args:
        triplets_per_anchor: triplets emitted per anchor (default 1).
        seed: seed of the miner's generator (default None: not reproducible).
        max_triplets: optional cap on triplets per batch (uniform random subset).
    """

    def __init__(self, triplets_per_anchor: int = 1, *, seed: int | None = None, max_triplets: int | None = None):
        super().__init__(seed=seed, max_triplets=max_triplets)
        self.triplets_per_anchor = check_positive_int(triplets_per_anchor, "triplets_per_anchor")

    def _mine(self, x: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Triplets:
        t = self.triplets_per_anchor
        pos_c, neg_c = pos.cpu(), neg.cpu()
        anchors = pos_c.any(dim=1).nonzero().flatten()
        # Uniform draws over each row's allowed columns: multinomial over the 0/1 mask.
        p = torch.multinomial(pos_c[anchors].double(), t, replacement=True, generator=self.generator)
        n = torch.multinomial(neg_c[anchors].double(), t, replacement=True, generator=self.generator)
        a = anchors.repeat_interleave(t)
        return a, p.flatten(), n.flatten()

    def __repr__(self) -> str:
        return (
            f"RandomMiner(triplets_per_anchor={self.triplets_per_anchor}, seed={self.seed}, "
            f"max_triplets={self.max_triplets})"
        )
