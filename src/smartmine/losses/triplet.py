"""Triplet losses: the ratio form of Smart Mining [SM Eq. 2] and the usual difference hinge (FaceNet form).

Both are means over the given triplets by default and expose :meth:`per_triplet`, the unreduced values, whose
``> 0`` mask is the training error that drives Smart Mining's adaptive κ controller (ALGORITHMS.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from smartmine._validation import ArrayLike
from smartmine.distances import DEFAULT_EPS, row_distances
from smartmine.losses.base import BaseLoss, autocast_disabled, check_float, check_reduction, reduce


class _PerTripletLoss(BaseLoss):
    """A loss that is a reduction of one value per triplet; subclasses implement :meth:`_per_triplet`."""

    reduction: str

    def per_triplet(self, embeddings: ArrayLike, triplets: Sequence[ArrayLike]) -> torch.Tensor:
        """The unreduced loss of every triplet, shape ``(T,)`` (float64 for float64 embeddings, float32 otherwise).

        Args:
            embeddings: ``(N, D)`` floating-point embeddings, finite.
            triplets: ``(a, p, n)`` index tensors of length ``T`` with values in ``[0, N)``; ``T = 0`` is allowed.
        """
        x, a, p, n = self._prepare(embeddings, triplets)
        with autocast_disabled(x.device):
            return self._per_triplet(x, a, p, n)

    @torch.no_grad()
    def active(
        self, embeddings: ArrayLike, labels: ArrayLike | Sequence[int] | None, triplets: Sequence[ArrayLike]
    ) -> torch.Tensor:
        """``(T,)`` bool: the triplets whose :meth:`per_triplet` loss is non-zero (``labels`` unused)."""
        return self.per_triplet(embeddings, triplets) > 0

    def _loss(
        self, x: torch.Tensor, labels: torch.Tensor | None, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        return reduce(self._per_triplet(x, a, p, n), self.reduction)

    def _per_triplet(self, x: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RatioTripletLoss(_PerTripletLoss):
    """Smart Mining's ratio triplet loss [SM Eq. 2]: ``max(0, 1 − D(a,n) / (D(a,p) + m))``, averaged over triplets.

    It is positive exactly when ``D(a,n) < D(a,p) + m``, the same condition as the difference hinge with plain
    distances, but its value is scale-free. Distances are plain, ``sqrt(D² + eps)``; ``eps`` keeps the gradient finite
    at ``D = 0`` and, with ``m = 0``, the denominator away from zero.

    Args:
        margin: ``m >= 0`` (default 0.2, the paper's value).
        eps: ``> 0``, added under the square root (default 1e-8).
        reduction: ``"mean"`` (default, the paper's), ``"sum"`` or ``"mean_nonzero"`` (mean over active triplets).
    """

    def __init__(self, margin: float = 0.2, eps: float = DEFAULT_EPS, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = check_float(margin, "margin", minimum=0.0)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.reduction = check_reduction(reduction)

    def _per_triplet(self, x: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d_ap = row_distances(x, a, p, eps=self.eps)
        d_an = row_distances(x, a, n, eps=self.eps)
        return torch.relu(1.0 - d_an / (d_ap + self.margin))

    def extra_repr(self) -> str:
        return f"margin={self.margin}, eps={self.eps}, reduction={self.reduction!r}"


class TripletLoss(_PerTripletLoss):
    """The difference-hinge triplet loss ``max(0, D(a,p) − D(a,n) + m)``, averaged over triplets.

    With ``squared=True`` both distances are squared Euclidean (exact, no ``eps``: the FaceNet form); otherwise they
    are plain, ``sqrt(D² + eps)``.

    Args:
        margin: ``m >= 0`` (default 0.2).
        squared: use squared distances (default False).
        eps: ``> 0``, added under the square root of plain distances (default 1e-8).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"mean_nonzero"`` (mean over active triplets, as
            pytorch-metric-learning's ``TripletMarginLoss`` reduces by default).
    """

    def __init__(
        self, margin: float = 0.2, squared: bool = False, eps: float = DEFAULT_EPS, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if not isinstance(squared, bool):
            raise ValueError(f"squared: expected a bool, got {squared!r}")
        self.margin = check_float(margin, "margin", minimum=0.0)
        self.squared = squared
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.reduction = check_reduction(reduction)

    def _per_triplet(self, x: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d_ap = row_distances(x, a, p, squared=self.squared, eps=self.eps)
        d_an = row_distances(x, a, n, squared=self.squared, eps=self.eps)
        return torch.relu(d_ap - d_an + self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, squared={self.squared}, eps={self.eps}, reduction={self.reduction!r}"
