"""Distances between embeddings.

Embeddings are normally L2-normalised (``‖f‖ = 1``), but every function here is correct for any vectors. Plain
(non-squared) Euclidean distances add ``eps`` under the square root so that gradients stay finite at ``D = 0``
(ALGORITHMS.md §1); squared distances are exact and clamped at zero against round-off.
"""

from __future__ import annotations

import torch

DEFAULT_EPS = 1e-8


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # Half precision loses too much in ‖x‖² + ‖y‖² − 2x·y; compute in float32 (float64 stays float64).
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances, shape ``(N, M)`` for ``x: (N, D)`` and ``y: (M, D)`` (``y`` defaults to ``x``).

    Computed as ``‖x‖² + ‖y‖² − 2 x·yᵀ`` in float32 or float64 and clamped at 0. When ``y`` is omitted the diagonal
    is set to exactly 0.
    """
    dtype = _compute_dtype(x)
    xf = x.to(dtype)
    yf = xf if y is None else y.to(dtype)
    x2 = (xf * xf).sum(dim=1, keepdim=True)
    y2 = x2 if y is None else (yf * yf).sum(dim=1, keepdim=True)
    d2 = x2 + y2.T - 2.0 * (xf @ yf.T)
    d2 = d2.clamp_min(0.0)
    if y is None:
        # Exact zeros on the diagonal (round-off would otherwise leave tiny positive values).
        d2 = d2 * (1.0 - torch.eye(d2.shape[0], dtype=dtype, device=d2.device))
    return d2


def pairwise_distances(
    x: torch.Tensor, y: torch.Tensor | None = None, *, squared: bool = False, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Euclidean distances, shape ``(N, M)``: ``sqrt(D² + eps)`` (plain) or ``D²`` (``squared=True``)."""
    d2 = pairwise_sq_distances(x, y)
    return d2 if squared else torch.sqrt(d2 + eps)


def row_distances(
    x: torch.Tensor, i: torch.Tensor, j: torch.Tensor, *, squared: bool = False, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Distances between rows ``x[i]`` and ``x[j]`` for index vectors ``i, j`` of length T; shape ``(T,)``.

    Computed from the difference vectors (not from the Gram matrix), which is exact near zero distance. Rows are
    gathered with ``index_select``, whose backward (``index_add_``) sums repeated rows in a fixed order; the backward
    of ``x[i]`` (``index_put_`` with accumulation) runs in parallel on the CPU once ``T × D`` is large, and then
    depends on thread timing (a batch mined in the batch has hundreds of triplets over the same rows).
    """
    dtype = _compute_dtype(x)
    diff = x.index_select(0, i).to(dtype) - x.index_select(0, j).to(dtype)
    d2 = (diff * diff).sum(dim=1)
    return d2 if squared else torch.sqrt(d2 + eps)


def cosine_similarity_matrix(x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarities, shape ``(N, M)``; rows are normalised first, so any non-zero vectors are accepted."""
    dtype = _compute_dtype(x)
    xn = torch.nn.functional.normalize(x.to(dtype), dim=1, eps=eps)
    yn = xn if y is None else torch.nn.functional.normalize(y.to(dtype), dim=1, eps=eps)
    return xn @ yn.T


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise the rows of ``x`` (shape preserved)."""
    return torch.nn.functional.normalize(x, dim=1, eps=eps)
