"""Adaptive κ controller of Smart Mining [SM Eqs. 7–8] and the training error it is driven by.

After every mined epoch the trainer reports the epoch's training error ``e`` (fraction of trained triplets with a
non-zero triplet loss). Larger κ admits fewer valid negatives, so more triplets are random and ``e`` drops; the
controller models this locally as a line ``κ = α·e + β`` fitted by least squares to the last ``window`` (κ, e)
records and steers to ``κ_next = α·e_target + β``. Decisions (ALGORITHMS.md §3): start at κ₀ = 16; while the window
holds fewer than two distinct κ, or the fit is degenerate (all errors equal) or has the wrong sign (α ≥ 0), take a
multiplicative probing step (κ/2 when e < e_target, 2κ otherwise); always clamp to ``[kappa_min, kappa_max]``.
``kappa_min`` is the configurable κ floor and may be below 1.

One refinement of ours: when no usable fit exists and the error is already within ``tolerance`` of the target, κ is
kept (rule ``"hold"``). Without it a converged controller, whose window then holds (nearly) equal errors, i.e. a
degenerate fit, would be kicked away from the right κ by a probing step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from smartmine._validation import ArrayLike, as_tensor, check_positive_int

ERROR_COUNTS = ("all", "mined")


@dataclass(frozen=True)
class KappaRecord:
    """One controller step: the κ an epoch was mined with, its training error, the κ chosen next and the rule used
    (``"fit"`` least-squares update, ``"step"`` multiplicative probing step, ``"hold"`` κ kept at the target)."""

    kappa: float
    error: float
    next_kappa: float
    rule: str


class AdaptiveKappa:
    """Steer κ so that the epoch training error approaches ``target_error``.

    Args:
        kappa0: initial κ (default 16).
        target_error: desired fraction of triplets with non-zero loss, in (0, 1) (default 0.5; [SM]: 0.5–0.75 work).
        window: number of most recent (κ, e) records the line is fitted to, >= 2 (default 5).
        kappa_min: κ floor, > 0 (default 1; values below 1 admit negatives inside the nearest-positive radius).
        kappa_max: κ ceiling (default 256).
        tolerance: when no usable fit exists, errors within this distance of the target keep κ (default 0.01).
    """

    def __init__(
        self,
        kappa0: float = 16.0,
        target_error: float = 0.5,
        window: int = 5,
        kappa_min: float = 1.0,
        kappa_max: float = 256.0,
        tolerance: float = 0.01,
    ) -> None:
        kappa_min, kappa_max, kappa0 = float(kappa_min), float(kappa_max), float(kappa0)
        if not (math.isfinite(kappa_min) and kappa_min > 0):
            raise ValueError(f"kappa_min: expected a finite value > 0, got {kappa_min}")
        if not (math.isfinite(kappa_max) and kappa_max >= kappa_min):
            raise ValueError(f"kappa_max: expected a finite value >= kappa_min ({kappa_min}), got {kappa_max}")
        if not (math.isfinite(kappa0) and kappa_min <= kappa0 <= kappa_max):
            raise ValueError(
                f"kappa0: expected a value in [kappa_min, kappa_max] = [{kappa_min}, {kappa_max}], got {kappa0}"
            )
        target_error = float(target_error)
        if not (0.0 < target_error < 1.0):
            raise ValueError(f"target_error: expected a value in (0, 1), got {target_error}")
        tolerance = float(tolerance)
        if not (0.0 <= tolerance < 1.0):
            raise ValueError(f"tolerance: expected a value in [0, 1), got {tolerance}")
        self.tolerance = tolerance
        self.kappa0 = kappa0
        self.target_error = target_error
        self.window = check_positive_int(window, "window", minimum=2)
        self.kappa_min = kappa_min
        self.kappa_max = kappa_max
        self._kappa = kappa0
        self._history: list[KappaRecord] = []

    @property
    def kappa(self) -> float:
        """The κ to mine the next epoch with."""
        return self._kappa

    @property
    def history(self) -> list[KappaRecord]:
        """All records so far, oldest first (a copy)."""
        return list(self._history)

    def update(self, error: float) -> float:
        """Record the training error of the epoch mined with the current κ and return the next κ."""
        error = float(error)
        if not (math.isfinite(error) and 0.0 <= error <= 1.0):
            raise ValueError(f"error: expected a finite fraction in [0, 1], got {error}")
        kappa = self._kappa
        # The record being made joins the fit window.
        ks = np.array([r.kappa for r in self._history[-(self.window - 1) :]] + [kappa], dtype=np.float64)
        es = np.array([r.error for r in self._history[-(self.window - 1) :]] + [error], dtype=np.float64)
        nxt, rule = None, "step"
        if np.unique(ks).size >= 2:
            fitted = self._fit(es, ks)
            if fitted is not None:
                nxt, rule = fitted, "fit"
        if nxt is None:
            if abs(error - self.target_error) <= self.tolerance:
                nxt, rule = kappa, "hold"
            else:
                nxt = kappa / 2.0 if error < self.target_error else kappa * 2.0
        nxt = float(min(max(nxt, self.kappa_min), self.kappa_max))
        self._history.append(KappaRecord(kappa=kappa, error=error, next_kappa=nxt, rule=rule))
        self._kappa = nxt
        return nxt

    def _fit(self, es: np.ndarray, ks: np.ndarray) -> float | None:
        """``α·e_target + β`` of the least-squares line κ = α·e + β, or ``None`` if degenerate or α >= 0."""
        e_mean = es.mean()
        var = float(((es - e_mean) ** 2).sum())
        # Errors that all (nearly) coincide carry no slope information.
        if var <= 1e-12 * max(1.0, float((es**2).sum())):
            return None
        alpha = float(((es - e_mean) * (ks - ks.mean())).sum()) / var
        if not math.isfinite(alpha) or alpha >= 0:
            return None
        beta = float(ks.mean()) - alpha * float(e_mean)
        nxt = alpha * self.target_error + beta
        return nxt if math.isfinite(nxt) else None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain Python types, safe for ``torch.save`` / JSON)."""
        return {
            "kappa0": self.kappa0,
            "target_error": self.target_error,
            "window": self.window,
            "kappa_min": self.kappa_min,
            "kappa_max": self.kappa_max,
            "tolerance": self.tolerance,
            "kappa": self._kappa,
            "history": [asdict(r) for r in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (configuration, current κ and history)."""
        fresh = AdaptiveKappa(
            kappa0=state["kappa0"],
            target_error=state["target_error"],
            window=state["window"],
            kappa_min=state["kappa_min"],
            kappa_max=state["kappa_max"],
            tolerance=state.get("tolerance", 0.01),
        )
        kappa = float(state["kappa"])
        if not (fresh.kappa_min <= kappa <= fresh.kappa_max):
            raise ValueError(f"state['kappa']: {kappa} lies outside [{fresh.kappa_min}, {fresh.kappa_max}]")
        self.__dict__.update(fresh.__dict__)
        self._kappa = kappa
        self._history = [KappaRecord(**r) for r in state["history"]]

    def __repr__(self) -> str:
        return (
            f"AdaptiveKappa(kappa={self._kappa:g}, target_error={self.target_error:g}, window={self.window}, "
            f"kappa_min={self.kappa_min:g}, kappa_max={self.kappa_max:g}, epochs={len(self._history)})"
        )


def training_error(
    per_triplet_loss: ArrayLike,
    is_mined: ArrayLike | None = None,
    count: str = "all",
    tol: float = 0.0,
) -> float:
    """Training error of an epoch: the fraction of triplets whose loss is non-zero (``> tol``).

    Args:
        per_triplet_loss: ``(T,)`` losses of the epoch's trained triplets, as computed when trained on.
        is_mined: ``(T,)`` bool, which triplets were mined (required for ``count="mined"``).
        count: ``"all"`` (default, [SM]'s supplement: mined and random) or ``"mined"`` (mined triplets only).
        tol: losses ``<= tol`` count as zero (default 0).

    Returns:
        The error in [0, 1]; 0.0 when no triplet is counted.
    """
    if count not in ERROR_COUNTS:
        raise ValueError(f"count: expected one of {ERROR_COUNTS}, got {count!r}")
    loss = as_tensor(per_triplet_loss, "per_triplet_loss").detach().reshape(-1).double().cpu()
    if not bool(torch.isfinite(loss).all()):
        raise ValueError("per_triplet_loss: contains NaN or inf")
    active = loss > tol
    if count == "mined":
        if is_mined is None:
            raise ValueError('is_mined: required when count="mined"')
        mined = as_tensor(is_mined, "is_mined").reshape(-1).bool().cpu()
        if mined.shape != loss.shape:
            raise ValueError(f"is_mined: length {mined.numel()} does not match {loss.numel()} losses")
        active = active[mined]
    return float(active.double().mean()) if active.numel() else 0.0
