"""The margin loss of "Sampling Matters in Deep Embedding Learning" [SMat] with a learned boundary β.

Positive pairs are pulled inside ``β − α`` and negative pairs pushed beyond ``β + α``; β itself is learned (one
scalar, or one per class), normally with its own optimiser group (reference: SGD, lr 0.1, momentum 0.9, no weight
decay), hence :meth:`MarginLoss.beta_parameters`.
"""

from __future__ import annotations

import torch

from smartmine._validation import check_positive_int
from smartmine.distances import DEFAULT_EPS, row_distances
from smartmine.losses.base import BaseLoss, check_float, zero_loss


class MarginLoss(BaseLoss):
    """Margin loss over triplets (ALGORITHMS.md §1)::

        pos_i = max(0, D(a_i, p_i) − β_c + α),   neg_i = max(0, β_c − D(a_i, n_i) + α),   c = class of a_i
        L = (Σ pos_i + Σ neg_i + ν Σ_i β_c) / (#{pos_i > 0} + #{neg_i > 0}),   L = 0 when nothing is active

    Distances are plain, ``sqrt(D² + eps)``. The regulariser ``ν Σ_i β_c`` sums β of every triplet's anchor class over
    the triplets (a scalar β counts ``T`` times) and is divided by the active count like the hinge terms, exactly as
    the spec writes it, whether or not β is learned. Implementations differ here: pytorch-metric-learning matches
    this for per-class β but, for a scalar β, adds ``ν · β`` once and *undivided*, and only when β is learned; with
    ``ν = 0`` (the default) they agree. The active count is a constant in the gradient,
    so ``∂L/∂β_c = (−#{active pos of class c} + #{active neg of class c} + ν · #{triplets of class c}) / count``.

    Args:
        alpha: the margin ``α >= 0`` (default 0.2).
        beta: initial boundary β (default 1.2).
        nu: ``ν >= 0``, weight of the β regulariser (default 0).
        num_classes: if given, one β per class, indexed by the anchor's label; labels must then lie in
            ``[0, num_classes)`` (default None: a single β shared by all classes).
        learn_beta: make β an ``nn.Parameter`` (default True); otherwise it is a fixed buffer.
        eps: ``> 0``, added under the square root (default 1e-8).

    :meth:`active` (the training error) counts a triplet while ``D(a,n) < D(a,p) + α``, independent of β.

    Attributes:
        beta: float32 tensor of shape ``(1,)`` or ``(num_classes,)``; a parameter when ``learn_beta``.
    """

    def __init__(
        self,
        alpha: float = 0.2,
        beta: float = 1.2,
        nu: float = 0.0,
        num_classes: int | None = None,
        learn_beta: bool = True,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__()
        if not isinstance(learn_beta, bool):
            raise ValueError(f"learn_beta: expected a bool, got {learn_beta!r}")
        self.alpha = check_float(alpha, "alpha", minimum=0.0)
        self.nu = check_float(nu, "nu", minimum=0.0)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes")
        self.learn_beta = learn_beta
        init = torch.full((self.num_classes or 1,), check_float(beta, "beta"), dtype=torch.float32)
        if learn_beta:
            self.beta = torch.nn.Parameter(init)
        else:
            self.register_buffer("beta", init)
        # The training error (active()) counts triplets out of order by α, whatever β is.
        self.error_margin = self.alpha
        # Per-class β is indexed with the labels, so they are required then.
        self.requires_labels = self.num_classes is not None

    def beta_parameters(self) -> list[torch.nn.Parameter]:
        """The β parameters, for a separate optimiser group; an empty list when β is not learned."""
        return [self.beta] if self.learn_beta else []

    def _check_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_classes is not None and labels is not None and labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"labels: with num_classes={self.num_classes} labels must lie in [0, {self.num_classes}), "
                    f"got range [{lo}, {hi}]"
                )
        return labels

    def _zero(self, x: torch.Tensor) -> torch.Tensor:
        return zero_loss(x, self.beta)

    def _loss(
        self, x: torch.Tensor, labels: torch.Tensor | None, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        beta = self.beta.to(device=x.device, dtype=x.dtype)
        # index_select: its backward sums repeated classes in a fixed order (see distances.row_distances)
        beta_c = beta.index_select(0, labels[a]) if self.num_classes is not None else beta.expand(a.shape[0])
        d_ap = row_distances(x, a, p, eps=self.eps)
        d_an = row_distances(x, a, n, eps=self.eps)
        pos = torch.relu(d_ap - beta_c + self.alpha)
        neg = torch.relu(beta_c - d_an + self.alpha)
        count = ((pos > 0).sum() + (neg > 0).sum()).to(x.dtype)
        total = pos.sum() + neg.sum() + self.nu * beta_c.sum()
        # torch.where instead of an `if count == 0`: no host-device synchronisation; the zero branch keeps x and β in
        # the graph, and the other branch divides by max(count, 1) so it never produces inf/NaN to be masked.
        return torch.where(count > 0, total / count.clamp_min(1.0), zero_loss(x, self.beta))

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, nu={self.nu}, num_classes={self.num_classes}, learn_beta={self.learn_beta}, "
            f"eps={self.eps}"
        )
