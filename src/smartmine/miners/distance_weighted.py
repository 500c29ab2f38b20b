"""Distance-weighted sampling [Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017].

On the unit sphere in ``m`` dimensions, distances between uniformly spread points have density

    q(d) ∝ d^(m−2) · (1 − d²/4)^((m−3)/2),   0 < d < 2,

so sampling negatives with probability ∝ ``1/q(D(a, n))`` spreads them over all distances instead of concentrating
them near √2. Following the reference semantics (ALGORITHMS.md §2): distances are clamped from below at ``cutoff``
(which bounds the weight, the paper's λ), only other-class candidates closer than ``nonzero_loss_cutoff`` are kept
(farther ones give zero margin loss), and every positive of the anchor is used once with one negative drawn, with
replacement, from the anchor's weighted row.

Numerics: the reference code and pytorch-metric-learning subtract one *global* maximum of the log-weights before
exponentiating; at ``m >= 128`` in float32 that underflows entire rows (``exp(−100)`` and below) and the row then
normalises to NaN. Here each row is normalised by its own log-sum-exp, so the largest weight of any row with a
candidate is ``exp(0)`` relative to its row and no such row can vanish.
"""

from __future__ import annotations

from typing import Literal

import torch

from smartmine._validation import ArrayLike, Triplets, check_embeddings, check_labels
from smartmine.distances import pairwise_distances
from smartmine.miners.base import InBatchMiner, label_masks

EmptyRow = Literal["uniform", "drop"]


def log_inverse_density(d: torch.Tensor, dim: int) -> torch.Tensor:
    """``log(1/q(d))`` up to a constant: ``(2 − m) log d − ((m − 3)/2) log(1 − d²/4)``, elementwise.

    Args:
        d: distances, any shape, expected in ``(0, 2)`` (outside that the result is ``±inf`` or NaN).
        dim: the embedding dimension ``m``.
    """
    return (2.0 - dim) * torch.log(d) - ((dim - 3.0) / 2.0) * torch.log1p(-0.25 * d * d)


class DistanceWeightedMiner(InBatchMiner):
    """Distance-weighted negative sampling with per-row log-sum-exp normalisation.

    For each anchor with ``k − 1`` other items of its class in the batch, emits ``k − 1`` triplets: each positive
    once, each with one negative drawn (with replacement) from :meth:`weights`' row of the anchor.

    Args:
        cutoff: lower clamp on distances before weighting (default 0.5); bounds the largest weight.
        nonzero_loss_cutoff: only negatives with ``D(a, n) <`` this are candidates (default 1.4).
        empty_row: what to do with an anchor whose row has no candidate (every negative at least
            ``nonzero_loss_cutoff`` away): ``"uniform"`` (default) draws its negatives uniformly from the other-class
            items, ``"drop"`` emits no triplet for it.
        seed: seed of the miner's generator (default None: not reproducible).
        max_triplets: optional cap on triplets per batch (uniform random subset).

    Embeddings are expected to be L2-normalised (the density above is the unit sphere's); the dimension ``m`` is
    ``embeddings.shape[1]``.
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        empty_row: EmptyRow = "uniform",
        *,
        seed: int | None = None,
        max_triplets: int | None = None,
    ):
        super().__init__(seed=seed, max_triplets=max_triplets)
        try:
            cutoff, nonzero_loss_cutoff = float(cutoff), float(nonzero_loss_cutoff)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cutoff, nonzero_loss_cutoff: expected numbers ({exc})") from exc
        if not 0.0 < cutoff < 2.0:
            raise ValueError(f"cutoff: expected a distance in (0, 2), got {cutoff}")
        if not cutoff < nonzero_loss_cutoff <= 2.0:
            raise ValueError(
                f"nonzero_loss_cutoff: expected a distance in (cutoff={cutoff}, 2], got {nonzero_loss_cutoff}"
            )
        if empty_row not in ("uniform", "drop"):
            raise ValueError(f"empty_row: expected 'uniform' or 'drop', got {empty_row!r}")
        self.cutoff = cutoff
        self.nonzero_loss_cutoff = nonzero_loss_cutoff
        self.empty_row: EmptyRow = empty_row

    def weights(self, embeddings: ArrayLike, labels: ArrayLike) -> torch.Tensor:
        """Row-normalised negative-sampling probabilities, shape ``(B, B)``.

        Entry ``(a, n)`` is the probability that anchor ``a`` draws ``n``: 0 for same-class items (the diagonal
        included) and for negatives at ``D >= nonzero_loss_cutoff``; each row sums to 1, or is all 0 when the anchor
        has no candidate. Float64 embeddings give float64 weights, anything else float32. No gradient flows.
        """
        x = check_embeddings(embeddings)
        y = check_labels(labels, x.shape[0]).to(x.device)
        with torch.no_grad():
            return self._weights(x.detach(), y, label_masks(y)[1])

    def _weights(self, x: torch.Tensor, labels: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        d = pairwise_distances(x).clamp_min(self.cutoff)
        candidates = neg & (d < self.nonzero_loss_cutoff)
        log_w = log_inverse_density(d, x.shape[1])
        neg_inf = torch.tensor(float("-inf"), dtype=d.dtype, device=d.device)
        log_w = torch.where(candidates, log_w, neg_inf)
        # Per-row normaliser: after subtracting its own log-sum-exp, a row's largest weight is >= 1/#candidates,
        # so no row with a candidate can underflow. Empty rows (lse = -inf) are left at 0 below.
        lse = torch.logsumexp(log_w, dim=1, keepdim=True)
        w = torch.exp(log_w - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
        return torch.where(candidates, w, torch.zeros_like(w))

    def _mine(self, x: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Triplets:
        w = self._weights(x, labels, neg).cpu()
        pos_c, neg_c = pos.cpu(), neg.cpu()
        empty = w.sum(dim=1) <= 0
        if self.empty_row == "uniform":
            w = torch.where(empty.unsqueeze(1), neg_c.to(w.dtype), w)
            keep = pos_c.any(dim=1) & neg_c.any(dim=1)
        else:
            keep = pos_c.any(dim=1) & ~empty
        anchors = keep.nonzero().flatten()
        if anchors.numel() == 0:
            e = torch.empty(0, dtype=torch.long)
            return e, e.clone(), e.clone()
        counts = pos_c[anchors].sum(dim=1)
        # Draw as many negatives per anchor as the largest positive count, keep the first `count` of each row.
        draws = torch.multinomial(w[anchors], int(counts.max()), replacement=True, generator=self.generator)
        used = torch.arange(draws.shape[1]).unsqueeze(0) < counts.unsqueeze(1)
        a_pos, p = pos_c[anchors].nonzero(as_tuple=True)  # row-major: per anchor, its positives in index order
        a = anchors[a_pos]
        n = draws[used]  # row-major too, `count` entries per anchor, aligned with (a, p)
        return a, p, n

    def __repr__(self) -> str:
        return (
            f"DistanceWeightedMiner(cutoff={self.cutoff}, nonzero_loss_cutoff={self.nonzero_loss_cutoff}, "
            f"empty_row={self.empty_row!r}, seed={self.seed}, max_triplets={self.max_triplets})"
        )
