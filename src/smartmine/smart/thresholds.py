"""Which κ lets mining fill its plan: the per-anchor thresholds ``t_a`` read off the neighbour lists.

An anchor has a valid negative at κ iff ``κ < t_a``, where (ALGORITHMS.md §3, revised)

* ``strict`` / ``margin_aware`` (the exclusion sphere is set by ``x⁺NN``, the first listed positive):
  ``t_a = D²(a, farthest listed negative) / D²(a, x⁺NN)``;
* ``semihard`` (the sphere is set by the slot's random listed positive ``p``): one threshold per listed positive,
  ``t_{a,p} = D²(a, farthest listed negative) / D²(a, p)``, each weighted ``1 / |P_a|`` so that every anchor weighs 1.

Conventions: ``t = ∞`` when the reference distance is 0 and some listed negative is farther (a duplicate positive: any
κ works); ``t = 0`` when the list holds no positive or no negative (no κ works). The weighted share of thresholds
above κ is the expected share of anchors that can be mined at κ; :func:`kappa_for_share` inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartmine._validation import ArrayLike, as_numpy, check_labels
from smartmine.smart.selection import SELECTION_MODES

_CHUNK_ROWS = 16_384  # bounds the (rows, k) temporaries


@dataclass(frozen=True)
class KappaThresholds:
    """Thresholds of one epoch's neighbour lists.

    Attributes:
        values: ``(M,)`` float64 thresholds (``inf`` allowed), one per anchor, or one per (anchor, listed positive)
            for ``semihard``.
        weights: ``(M,)`` float64 positive weights; they sum to the number of anchors.
    """

    values: np.ndarray
    weights: np.ndarray

    def share_above(self, kappa: float) -> float:
        """Weighted share of thresholds ``> kappa``: the expected share of anchors with a valid negative at κ."""
        total = float(self.weights.sum())
        return float(self.weights[self.values > kappa].sum()) / total if total > 0 else 0.0

    def quantiles(self, qs: tuple[float, ...] = (0.1, 0.5, 0.9)) -> tuple[float, ...]:
        """Weighted quantiles of the thresholds (lower interpolation; ``inf`` where the quantile is infinite)."""
        if self.values.size == 0:
            return tuple(0.0 for _ in qs)
        order = np.argsort(self.values, kind="stable")
        v, cw = self.values[order], np.cumsum(self.weights[order])
        cw = cw / cw[-1]
        return tuple(float(v[min(int(np.searchsorted(cw, q, side="left")), v.size - 1)]) for q in qs)


def kappa_thresholds(
    neighbour_indices: ArrayLike,
    neighbour_sq_distances: ArrayLike,
    labels: ArrayLike,
    selection: str = "strict",
) -> KappaThresholds:
    """The thresholds ``t_a`` of every anchor (module docstring).

    Args:
        neighbour_indices: ``(N, k)`` int lists, ascending by distance, ``-1`` padding; a self entry is ignored.
        neighbour_sq_distances: ``(N, k)`` float squared distances of those entries.
        labels: ``(N,)`` integer labels.
        selection: ``"strict"`` (default), ``"margin_aware"`` or ``"semihard"``.

    Returns:
        A :class:`KappaThresholds`.
    """
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection: expected one of {SELECTION_MODES}, got {selection!r}")
    idx = as_numpy(neighbour_indices)
    d2 = as_numpy(neighbour_sq_distances, dtype=np.float64)
    if idx.ndim != 2 or d2.shape != idx.shape:
        raise ValueError(f"neighbour lists: expected two (N, k) arrays of one shape, got {idx.shape} and {d2.shape}")
    n = idx.shape[0]
    lab = check_labels(labels, n).numpy()
    values, weights = [], []
    for lo in range(0, n, _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        v, w = _chunk_thresholds(idx[lo:hi], d2[lo:hi], lab, np.arange(lo, hi), selection == "semihard")
        values.append(v)
        weights.append(w)
    if not values:
        return KappaThresholds(np.zeros(0), np.zeros(0))
    return KappaThresholds(np.concatenate(values), np.concatenate(weights))


def _chunk_thresholds(
    idx: np.ndarray, d2: np.ndarray, lab: np.ndarray, anchors: np.ndarray, per_positive: bool
) -> tuple[np.ndarray, np.ndarray]:
    valid = (idx >= 0) & (idx != anchors[:, None])
    same = valid & (lab[np.where(idx >= 0, idx, 0)] == lab[anchors][:, None])
    neg = valid & ~same
    far_neg = np.where(neg, d2, -np.inf).max(axis=1, initial=-np.inf)  # -inf: no negative listed
    has_neg = np.isfinite(far_neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        if not per_positive:
            has_pos = same.any(axis=1)
            first = np.argmax(same, axis=1)
            ref = np.maximum(d2[np.arange(idx.shape[0]), first], 0.0)
            t = np.where(ref > 0, far_neg / ref, np.where(far_neg > 0, np.inf, 0.0))
            t = np.where(has_pos & has_neg, t, 0.0)
            return t, np.ones_like(t)
        npos = same.sum(axis=1)
        rows, cols = np.nonzero(same & has_neg[:, None])
        ref = np.maximum(d2[rows, cols], 0.0)
        fn = far_neg[rows]
        t = np.where(ref > 0, fn / ref, np.where(fn > 0, np.inf, 0.0))
        w = 1.0 / npos[rows]
    # Anchors that cannot be mined at any κ: one zero threshold of weight 1.
    dead = np.nonzero((npos == 0) | ~has_neg)[0]
    return np.concatenate([t, np.zeros(dead.size)]), np.concatenate([w, np.ones(dead.size)])


def kappa_for_share(thresholds: KappaThresholds, share: float) -> float:
    """The largest κ at which at least ``share`` of the anchors (weighted) have a valid negative.

    Returns ``inf`` when ``share <= 0`` or the share is met at every κ, and ``0.0`` when no κ > 0 meets it (too few
    anchors can be mined at all). The value returned is just below the deciding threshold, so ``t > κ`` holds for it.
    """
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: expected a value in [0, 1], got {share}")
    v, w = thresholds.values, thresholds.weights
    total = float(w.sum())
    if share <= 0.0 or total <= 0.0:
        return float("inf")
    order = np.argsort(-v, kind="stable")  # descending
    cw = np.cumsum(w[order]) / total
    pos = int(np.searchsorted(cw, share - 1e-12, side="left"))
    if pos >= v.size:
        return 0.0
    t = float(v[order][pos])
    if not np.isfinite(t):
        return float("inf")
    return t * (1.0 - 1e-9) if t > 0 else 0.0
