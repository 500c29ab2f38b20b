"""Common machinery of the losses: validation, precision handling, empty batches and reductions.

Every loss is a ``torch.nn.Module`` called as ``loss(embeddings, labels, triplets) -> scalar tensor`` where
``triplets = (a, p, n)`` are 1-D integer tensors of row indices into ``embeddings`` (what the miners return). The base
class :class:`BaseLoss` guarantees the shared contract, so that subclasses only write their formula:

* inputs are validated with :mod:`smartmine._validation` (``ValueError`` naming the argument on bad input, including
  NaN/inf embeddings, which would otherwise surface much later as a silent NaN loss);
* precision: the formula runs with autocast disabled, in float64 for float64 embeddings and in float32 otherwise
  (float32, and float16/bfloat16 whether they come from autocast or not). Ratios, square roots of small squared
  distances and variances are not trustworthy in half precision, and a loss is cheap next to the network, so the
  result is a float32 scalar for half inputs; gradients flow back through the cast into the half embeddings;
* empty triplets give ``embeddings.sum() * 0``: an exact zero that is still connected to the graph (so that
  ``backward()`` works and every parameter gets a zero rather than a missing gradient), never NaN;
* the triplet indices are moved to the embeddings' device, so CPU indices work with CUDA embeddings.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch

from smartmine._validation import ArrayLike, check_embeddings, check_labels, check_triplets
from smartmine.distances import row_distances

Reduction = Literal["mean", "sum", "mean_nonzero"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "mean_nonzero")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a loss is computed in: float64 stays float64, everything else (half, bfloat16, float32) is float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that turns autocast off for ``device``'s type (a no-op where autocast does not exist)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # device types without autocast support (e.g. "meta")
        return contextlib.nullcontext()


def check_float(value: float, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """Return ``value`` as a finite float, optionally ``>= minimum`` (``> minimum`` when ``strict``).

    Raises ``ValueError`` naming ``name`` for booleans, non-numbers, NaN/inf and values out of range.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:  # accepts Python and NumPy numbers and 0-d tensors
        value = float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: expected a number, got {value!r}") from exc
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name}: expected a number {op} {minimum}, got {value}")
    return value


def check_reduction(reduction: str) -> str:
    """Validate a reduction name (one of :data:`REDUCTIONS`)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a non-empty 1-D tensor of non-negative per-element losses to a scalar.

    ``mean``: the plain mean; ``sum``: the sum; ``mean_nonzero``: the mean over the elements that are > 0, and 0 (still
    connected to the graph) when there is none — pytorch-metric-learning's ``AvgNonZeroReducer``. No host-device
    synchronisation is needed in any case.
    """
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    active = (values > 0).sum().to(values.dtype)
    return values.sum() / active.clamp_min(1.0)  # all-zero values: 0 / 1 = 0


def zero_loss(x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
    """An exact scalar zero in ``x``'s dtype that depends on ``x`` (and on every ``extra`` tensor) in the graph."""
    z = x.sum() * 0
    for t in extra:
        z = z + t.to(x.dtype).sum() * 0
    return z


class BaseLoss(torch.nn.Module, ABC):
    """Base class of the triplet-indexed losses; subclasses implement :meth:`_loss`.

    Call as ``loss(embeddings, labels, triplets)``:

    Args:
        embeddings: ``(N, D)`` floating-point embeddings (normally L2-normalised), finite; float16, bfloat16,
            float32 or float64, on any device.
        labels: ``(N,)`` integer class labels, or None for the losses that do not need them (all except a
            :class:`~smartmine.losses.margin.MarginLoss` with per-class β).
        triplets: ``(a, p, n)``, three 1-D integer index tensors of equal length with values in ``[0, N)``. They are
            trusted to be valid triplets (``labels[a] == labels[p]``, ``labels[n] != labels[a]``), as the miners
            guarantee; that is not re-checked here, to avoid a device synchronisation per step.

    Returns:
        A scalar tensor: float64 for float64 embeddings, float32 otherwise.
    """

    requires_labels: bool = False
    error_margin: float = 0.2
    """Margin ``m`` of the default :meth:`active` rule (losses that are not a hinge per triplet)."""

    def forward(
        self,
        embeddings: ArrayLike,
        labels: ArrayLike | Sequence[int] | None,
        triplets: Sequence[ArrayLike],
    ) -> torch.Tensor:
        x = check_embeddings(embeddings)
        y = None if labels is None else check_labels(labels, x.shape[0]).to(x.device)
        if y is None and self.requires_labels:
            raise ValueError(f"labels: {type(self).__name__} needs the class labels, got None")
        a, p, n = (t.to(x.device) for t in check_triplets(triplets, x.shape[0]))
        with autocast_disabled(x.device):
            xc = x.to(compute_dtype(x))
            y = self._check_labels(y)
            if a.numel() == 0:
                return self._zero(xc)
            return self._loss(xc, y, a, p, n)

    @torch.no_grad()
    def active(
        self,
        embeddings: ArrayLike,
        labels: ArrayLike | Sequence[int] | None,
        triplets: Sequence[ArrayLike],
    ) -> torch.Tensor:
        """Which triplets are active, i.e. still carry loss: ``(T,)`` bool on the embeddings' device.

        The fraction of active triplets is the training error that steers smart mining's κ (ALGORITHMS.md §3). This
        default, for losses that are not one hinge per triplet (pair and distribution losses), counts a triplet as
        active while it violates the triplet order by :attr:`error_margin`: ``D(a,n) < D(a,p) + m`` with plain
        distances ``sqrt(D² + 1e-8)``. Per-triplet losses override it with "their own value is non-zero".

        Args:
            embeddings: ``(N, D)`` floating-point embeddings, finite.
            labels: ``(N,)`` labels or ``None`` (unused by the default rule).
            triplets: ``(a, p, n)`` index tensors of length ``T``; ``T = 0`` gives an empty mask.
        """
        x, a, p, n = self._prepare(embeddings, triplets)
        with autocast_disabled(x.device):
            return row_distances(x, a, n) < row_distances(x, a, p) + self.error_margin

    def _check_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Hook for subclasses with extra conditions on the labels (e.g. a range); returns them unchanged."""
        return labels

    def _zero(self, x: torch.Tensor) -> torch.Tensor:
        """The loss of an empty set of triplets (subclasses with parameters also connect those)."""
        return zero_loss(x)

    def _prepare(self, embeddings: ArrayLike, triplets: Sequence[ArrayLike]) -> tuple[torch.Tensor, ...]:
        """Validate ``(embeddings, triplets)`` for the label-free helpers (``per_triplet``, ``active``):
        ``(x, a, p, n)``."""
        x = check_embeddings(embeddings)
        a, p, n = (t.to(x.device) for t in check_triplets(triplets, x.shape[0]))
        return x.to(compute_dtype(x)), a, p, n

    @abstractmethod
    def _loss(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        a: torch.Tensor,
        p: torch.Tensor,
        n: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of validated, non-empty triplets on ``x`` (float32 or float64, autocast off), a scalar."""
