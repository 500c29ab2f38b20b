"""The contrastive loss [Hadsell, Chopra & LeCun 2006], the pairwise baseline of [SMat], fed from triplets.

Each triplet ``(a, p, n)`` contributes the positive pair ``(a, p)`` and the negative pair ``(a, n)``, so the loss
sees exactly the pairs a triplet loss would on the same mined triplets.
"""

from __future__ import annotations

import torch

from smartmine.distances import DEFAULT_EPS, row_distances
from smartmine.losses.base import BaseLoss, check_float, check_reduction, reduce


class ContrastiveLoss(BaseLoss):
    """``y D² + (1 − y) max(0, α − D)²`` over the pairs ``(a, p)`` (``y = 1``) and ``(a, n)`` (``y = 0``).

    The positive term uses the exact squared distance; the negative hinge uses the plain distance
    ``sqrt(D² + eps)``.

    **Reduction** (default ``"mean"``): the mean over all ``2T`` pairs of the ``T`` triplets, inactive negative pairs
    included, i.e. ``(Σ_i D²(a_i, p_i) + Σ_i max(0, α − D(a_i, n_i))²) / (2T)``. A pair that several triplets share
    counts once per triplet (no deduplication), so the positive/negative balance is the miner's. ``"sum"`` sums
    the pairs; ``"mean_nonzero"`` averages over the pairs with a non-zero loss.

    Args:
        margin: ``α >= 0``, the distance beyond which negatives stop contributing (default 1.0: for unit vectors
            distances lie in ``[0, 2]`` and unrelated ones concentrate near √2, so 1.0 pushes only genuinely close
            negatives).
        eps: ``> 0``, added under the square root of the negative distances (default 1e-8).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"mean_nonzero"``.
        error_margin: ``m >= 0`` of :meth:`active`, the training error: a triplet counts while
            ``D(a,n) < D(a,p) + m`` (default 0.2, the triplet margin).
    """

    def __init__(
        self, margin: float = 1.0, eps: float = DEFAULT_EPS, reduction: str = "mean", error_margin: float = 0.2
    ) -> None:
        super().__init__()
        self.margin = check_float(margin, "margin", minimum=0.0)
        self.error_margin = check_float(error_margin, "error_margin", minimum=0.0)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.reduction = check_reduction(reduction)

    def pair_losses(self, x: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Per-pair losses of validated triplets, shape ``(2T,)``: the ``T`` positive pairs, then the ``T`` negative."""
        pos = row_distances(x, a, p, squared=True)
        neg = torch.relu(self.margin - row_distances(x, a, n, eps=self.eps)) ** 2
        return torch.cat([pos, neg])

    def _loss(
        self, x: torch.Tensor, labels: torch.Tensor | None, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        return reduce(self.pair_losses(x, a, p, n), self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, eps={self.eps}, reduction={self.reduction!r}"
