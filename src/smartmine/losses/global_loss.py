"""The global loss of Kumar B G, Carneiro & Reid (CVPR 2016), as restated by Smart Mining [SM Eq. 3].

Instead of a hinge per triplet it shapes the two distance distributions of a mini-batch: it asks for small spreads of
the positive and the negative distances and for a mean positive distance below the mean negative one by ``t``.
"""

from __future__ import annotations

import torch

from smartmine.distances import row_distances
from smartmine.losses.base import BaseLoss, check_float


class GlobalLoss(BaseLoss):
    """``J_g = (σ⁺² + σ⁻²) + λ · max(0, μ⁺ − μ⁻ + t)`` over the triplets of one call (ALGORITHMS.md §1).

    With ``d⁺_i = D²(a_i, p_i) / 4`` and ``d⁻_i = D²(a_i, n_i) / 4`` (both in ``[0, 1]`` for unit vectors), ``μ±`` are
    their means and ``σ±²`` their *population* variances (divisor ``T``, so one triplet gives variance 0). Squared
    distances are exact, so no ``eps`` is needed. Statistics are taken per call, i.e. per mini-batch (the spec's
    decision). A positive pair repeated by several triplets counts once per triplet.

    Args:
        lam: ``λ >= 0``, weight of the mean term (default 1).
        t: margin between the means (default 0.01); any finite value.
        error_margin: ``m >= 0`` of :meth:`active`: a triplet counts while ``D(a,n) < D(a,p) + m`` (default 0.2).
    """

    def __init__(self, lam: float = 1.0, t: float = 0.01, error_margin: float = 0.2) -> None:
        super().__init__()
        self.error_margin = check_float(error_margin, "error_margin", minimum=0.0)
        self.lam = check_float(lam, "lam", minimum=0.0)
        self.t = check_float(t, "t")

    def distance_stats(self, x: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> dict:
        """``{"mu_pos", "mu_neg", "var_pos", "var_neg"}`` (scalar tensors) of validated, non-empty triplets."""
        d_pos = row_distances(x, a, p, squared=True) / 4.0
        d_neg = row_distances(x, a, n, squared=True) / 4.0
        mu_pos, mu_neg = d_pos.mean(), d_neg.mean()
        return {
            "mu_pos": mu_pos,
            "mu_neg": mu_neg,
            "var_pos": ((d_pos - mu_pos) ** 2).mean(),
            "var_neg": ((d_neg - mu_neg) ** 2).mean(),
        }

    def _loss(
        self, x: torch.Tensor, labels: torch.Tensor | None, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        s = self.distance_stats(x, a, p, n)
        return s["var_pos"] + s["var_neg"] + self.lam * torch.relu(s["mu_pos"] - s["mu_neg"] + self.t)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, t={self.t}"
