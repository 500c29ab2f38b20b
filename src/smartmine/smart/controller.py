"""Adaptive κ controller of Smart Mining [SM Eqs. 7–8] and the training error it is driven by.

After every mined epoch the trainer reports the epoch's training error ``e`` (fraction of trained triplets with a
non-zero triplet loss). Larger κ admits fewer valid negatives, so more triplets are random and ``e`` drops; the
controller models this locally as a line ``κ = α·e + β`` fitted by least squares to the last ``window`` (κ, e)
records and steers to ``κ_next = α·e_target + β``. Decisions (ALGORITHMS.md §3): start at κ₀ = 16; while the window
holds fewer than two distinct κ, or the fit is degenerate (all errors equal) or has the wrong sign (α ≥ 0), take a
multiplicative probing step (κ/2 when e < e_target, 2κ otherwise); always clamp to ``[kappa_min, kappa_max]``.
``kappa_min`` is the configurable κ floor and may be below 1.

:class:`AdaptiveKappa` is the paper's controller, kept as ``mining.controller: legacy``. :class:`SteeredKappa` (ours,
the default) fixes what broke it on real data (ALGORITHMS.md §3, revised): it only fits epochs that mined what they
planned, never raises κ after a shortfall, and keeps κ where the neighbour lists say mining can fill its plan.

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
from smartmine.smart.thresholds import KappaThresholds, kappa_for_share

ERROR_COUNTS = ("all", "mined")


def _check_common(kappa_min: float, kappa_max: float, target_error: float, tolerance: float) -> tuple[float, ...]:
    """The arguments both controllers share, validated and as floats."""
    kappa_min, kappa_max = float(kappa_min), float(kappa_max)
    if not (math.isfinite(kappa_min) and kappa_min > 0):
        raise ValueError(f"kappa_min: expected a finite value > 0, got {kappa_min}")
    if not (math.isfinite(kappa_max) and kappa_max >= kappa_min):
        raise ValueError(f"kappa_max: expected a finite value >= kappa_min ({kappa_min}), got {kappa_max}")
    if not 0.0 < float(target_error) < 1.0:
        raise ValueError(f"target_error: expected a value in (0, 1), got {target_error}")
    if not 0.0 <= float(tolerance) < 1.0:
        raise ValueError(f"tolerance: expected a value in [0, 1), got {tolerance}")
    return kappa_min, kappa_max, float(target_error), float(tolerance)


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
        kappa_min, kappa_max, target_error, tolerance = _check_common(kappa_min, kappa_max, target_error, tolerance)
        kappa0 = float(kappa0)
        if not (math.isfinite(kappa0) and kappa_min <= kappa0 <= kappa_max):
            raise ValueError(
                f"kappa0: expected a value in [kappa_min, kappa_max] = [{kappa_min}, {kappa_max}], got {kappa0}"
            )
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
        return _line_fit(es, ks, self.target_error)

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
) -> float | None:
    """Training error of an epoch: the fraction of triplets whose loss is non-zero (``> tol``).

    Args:
        per_triplet_loss: ``(T,)`` losses of the epoch's trained triplets, as computed when trained on.
        is_mined: ``(T,)`` bool, which triplets were mined (required for ``count="mined"``).
        count: ``"all"`` (default, [SM]'s supplement: mined and random) or ``"mined"`` (mined triplets only).
        tol: losses ``<= tol`` count as zero (default 0).

    Returns:
        The error in [0, 1]; ``None`` when no triplet is counted (e.g. ``count="mined"`` on an epoch that mined
        nothing): such an epoch measured nothing, and :meth:`SteeredKappa.update` treats it as a shortfall.
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
    return float(active.double().mean()) if active.numel() else None


@dataclass(frozen=True)
class SteerRecord:
    """One :class:`SteeredKappa` step.

    Attributes:
        kappa: the κ the epoch was mined with.
        error: its training error (``None``: nothing was counted).
        fill: mined triplets / planned mined triplets of the epoch, in [0, 1].
        in_fit: whether the record enters the least-squares fit (error measured and ``fill >= min_fill``).
        next_kappa: the κ chosen next (before the next epoch's cap from its thresholds).
        rule: ``"fit"``, ``"step"``, ``"hold"`` or ``"shortfall"`` (κ lowered because mining fell short).
    """

    kappa: float
    error: float | None
    fill: float
    in_fit: bool
    next_kappa: float
    rule: str


class SteeredKappa:
    """κ controller that steers only what κ can change (ours; ALGORITHMS.md §3, revised).

    Every mined epoch: :meth:`propose` takes the epoch's thresholds ``t_a`` (:mod:`smartmine.smart.thresholds`) and
    returns the κ to mine with and sets :attr:`share_scale`, the factor the epoch's planned mined triplets are scaled
    by. ``cap`` is the largest κ at which the planned share of anchors still has a valid negative; with
    ``kappa0=None`` (``auto``) the first mined epoch starts at ``cap``. While the controller's κ is at most ``cap`` the
    full plan is mined (``share_scale = 1``). When it asks for more than ``cap`` (the error stayed above the target
    even at the cap: the mined triplets are too hard for this model), the plan shrinks to what that κ can fill,
    ``share_scale = share_above(κ) / share``, the rest of the epoch being random triplets; below ``min_share_scale``
    the plan stops shrinking and κ is capped at the κ that fills ``min_share_scale × share``. So the error is steered
    by trading mined triplets for random ones instead of by mining fewer than planned, and the plan grows back as soon
    as the controller's κ falls below the cap again. After training, :meth:`update` gets the epoch's training error
    and fill (mined / planned):

    * an epoch that fell short (``fill < min_fill``) or counted nothing (``error is None``) does not enter the fit; κ
      is divided by ``step`` (rule ``"shortfall"``), since only a smaller κ admits more negatives;
    * otherwise the (κ, e) record joins the fit window: the least-squares line ``κ = α·e + β`` over the last
      ``window`` fitted records gives ``κ_next = α·e_target + β`` (rule ``"fit"``); without a usable fit (fewer than
      two distinct κ, degenerate, α >= 0) κ is held when within ``tolerance`` of the target, else multiplied or divided
      by ``step``; a step never moves κ by more than ``max_change`` at once, and an epoch with any shortfall never
      raises κ.

    Args:
        kappa0: initial κ, or ``None`` (default) for ``auto``.
        target_error: desired training error in (0, 1) (default 0.5).
        window: fitted records used, >= 2 (default 5).
        kappa_min: κ floor, > 0 (default 1: with ``semihard`` selection, never harder than semi-hard).
        kappa_max: κ ceiling (default 256).
        tolerance: hold band around the target when no fit is usable (default 0.02).
        min_fill: smallest fill whose error enters the fit, in (0, 1] (default 0.8).
        step: multiplicative probing / shortfall step, > 1 (default 2).
        max_change: largest factor κ may change by in one update, >= step (default 4).
        min_share_scale: smallest factor the planned mined share may shrink to, in (0, 1] (default 0.25; 1 keeps the
            full plan and caps κ instead).
        cautious_start: with ``kappa0=None``, start the first mined epoch with the plan at its floor, at the κ that
            fills ``min_share_scale × share`` (easier triplets, fewer of them), and let the error decide whether the
            plan grows (default True). False starts at ``cap`` with the full plan. Hard mined triplets can cost accuracy
            where the model is not ready for them (fine-tuning on cub100, docs/BENCHMARKS.md): starting small means
            the controller has measured the mined error before it mines at full share.
    """

    def __init__(
        self,
        kappa0: float | None = None,
        target_error: float = 0.5,
        window: int = 5,
        kappa_min: float = 1.0,
        kappa_max: float = 256.0,
        tolerance: float = 0.02,
        min_fill: float = 0.8,
        step: float = 2.0,
        max_change: float = 4.0,
        min_share_scale: float = 0.25,
        cautious_start: bool = True,
    ) -> None:
        kappa_min, kappa_max, target_error, tolerance = _check_common(kappa_min, kappa_max, target_error, tolerance)
        if kappa0 is not None:
            kappa0 = float(kappa0)
            if not (math.isfinite(kappa0) and kappa_min <= kappa0 <= kappa_max):
                raise ValueError(f"kappa0: expected None (auto) or a value in [{kappa_min}, {kappa_max}], got {kappa0}")
        if not 0.0 < float(min_fill) <= 1.0:
            raise ValueError(f"min_fill: expected a value in (0, 1], got {min_fill}")
        if not (math.isfinite(float(step)) and float(step) > 1.0):
            raise ValueError(f"step: expected a finite value > 1, got {step}")
        if not (math.isfinite(float(max_change)) and float(max_change) >= float(step)):
            raise ValueError(f"max_change: expected a finite value >= step ({step}), got {max_change}")
        if not (math.isfinite(float(min_share_scale)) and 0.0 < float(min_share_scale) <= 1.0):
            raise ValueError(f"min_share_scale: expected a value in (0, 1], got {min_share_scale}")
        self.kappa0 = kappa0
        self.target_error = target_error
        self.window = check_positive_int(window, "window", minimum=2)
        self.kappa_min, self.kappa_max = kappa_min, kappa_max
        self.tolerance = tolerance
        self.min_fill = float(min_fill)
        self.step = float(step)
        self.max_change = float(max_change)
        self.min_share_scale = float(min_share_scale)
        self.cautious_start = bool(cautious_start)
        self._kappa: float | None = kappa0
        self._share_scale = 1.0
        self._history: list[SteerRecord] = []
        self.last_cap: float | None = None  # κ_cap of the last propose() (not state: recomputed every epoch)

    @property
    def kappa(self) -> float | None:
        """The κ for the next mined epoch, before that epoch's cap; ``None`` while ``auto`` is unresolved."""
        return self._kappa

    @property
    def share_scale(self) -> float:
        """Factor in ``[min_share_scale, 1]`` that the last :meth:`propose` scaled the planned mined share by."""
        return self._share_scale

    @property
    def history(self) -> list[SteerRecord]:
        """All records, oldest first (a copy)."""
        return list(self._history)

    def propose(self, thresholds: KappaThresholds, share: float) -> float:
        """The κ to mine this epoch with; also sets :attr:`share_scale`.

        Args:
            thresholds: the epoch's :func:`~smartmine.smart.thresholds.kappa_thresholds`.
            share: share of anchors the full plan needs mined, in [0, 1].

        Returns:
            The controller's κ (for the first epoch of ``auto``: ``cap = kappa_for_share(thresholds, share)``, or
            with ``cautious_start`` the plan at its floor, ``kappa_for_share(thresholds, min_share_scale × share)``),
            clamped to ``[kappa_min, kappa_max]``. Above ``cap`` the plan shrinks to
            ``share_scale = share_above(κ) / share``; where that is below ``min_share_scale``, κ is lowered to
            ``kappa_for_share(thresholds, min_share_scale × share)`` instead. With ``min_share_scale = 1``, or a
            ``cap`` below ``kappa_min`` (no κ above the floor fills the plan), κ is capped at ``cap`` and the plan
            kept. The result becomes the controller's κ; ``cap`` is kept as :attr:`last_cap`.
        """
        share = float(share)
        cap = kappa_for_share(thresholds, share)
        self.last_cap = cap  # the miner records it (one sort of the thresholds per epoch, not two)
        kappa, scale = (cap if self._kappa is None else self._kappa), 1.0
        can_shrink = share > 0.0 and cap >= self.kappa_min and self.min_share_scale < 1.0
        if self._kappa is None and self.cautious_start and can_shrink:
            floor = kappa_for_share(thresholds, self.min_share_scale * share)
            if floor > cap:  # the floor's plan is easier to fill than the whole plan: start there
                kappa, scale = floor, self.min_share_scale
        elif kappa > cap:
            if can_shrink:
                scale = thresholds.share_above(kappa) / share
                if scale < self.min_share_scale:
                    scale = self.min_share_scale
                    kappa = kappa_for_share(thresholds, scale * share)
                scale = min(scale, 1.0)
            else:  # the plan may not shrink, or no κ above the floor fills it (the shortfall rule lowers κ)
                kappa = cap
        kappa = float(min(max(kappa, self.kappa_min), self.kappa_max))
        self._kappa, self._share_scale = kappa, float(scale)
        return kappa

    def update(self, error: float | None, fill: float) -> float:
        """Record the epoch mined with the current κ (its training error and fill) and return the next κ."""
        if self._kappa is None:
            raise RuntimeError("SteeredKappa.update: call propose() first (auto κ is resolved from the thresholds)")
        fill = float(fill)
        if not (math.isfinite(fill) and 0.0 <= fill <= 1.0):
            raise ValueError(f"fill: expected a fraction in [0, 1], got {fill}")
        if error is not None:
            error = float(error)
            if not (math.isfinite(error) and 0.0 <= error <= 1.0):
                raise ValueError(f"error: expected None or a finite fraction in [0, 1], got {error}")
        kappa = self._kappa
        in_fit = error is not None and fill >= self.min_fill
        if not in_fit:
            nxt, rule = kappa / self.step, "shortfall"
        else:
            fitted = [r for r in self._history if r.in_fit][-(self.window - 1) :]
            ks = np.array([r.kappa for r in fitted] + [kappa])
            es = np.array([r.error for r in fitted] + [error])
            nxt, rule = None, "step"
            if np.unique(ks).size >= 2:
                nxt = _line_fit(es, ks, self.target_error)
                rule = "fit" if nxt is not None else rule
            if nxt is None:
                if abs(error - self.target_error) <= self.tolerance:
                    nxt, rule = kappa, "hold"
                else:
                    nxt = kappa / self.step if error < self.target_error else kappa * self.step
            nxt = min(max(nxt, kappa / self.max_change), kappa * self.max_change)
            if fill < 1.0:
                nxt = min(nxt, kappa)  # a shortfall never raises κ: a larger κ can only mine less
        nxt = float(min(max(nxt, self.kappa_min), self.kappa_max))
        self._history.append(SteerRecord(kappa, error, fill, in_fit, nxt, rule))
        self._kappa = nxt
        return nxt

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain Python types)."""
        return {
            "kind": "steered",
            "kappa0": self.kappa0,
            "target_error": self.target_error,
            "window": self.window,
            "kappa_min": self.kappa_min,
            "kappa_max": self.kappa_max,
            "tolerance": self.tolerance,
            "min_fill": self.min_fill,
            "step": self.step,
            "max_change": self.max_change,
            "min_share_scale": self.min_share_scale,
            "cautious_start": self.cautious_start,
            "kappa": self._kappa,
            "share_scale": self._share_scale,
            "history": [asdict(r) for r in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        if state.get("kind") != "steered":
            raise ValueError(f"state: not a SteeredKappa state (kind {state.get('kind')!r})")
        keys = ("kappa0", "target_error", "window", "kappa_min", "kappa_max", "tolerance", "min_fill", "step",
                "max_change")  # fmt: skip
        # States written before the plan could shrink lack min_share_scale / share_scale: they resume with the full
        # plan (min_share_scale 1 reproduces the old behaviour exactly).
        # States written before the cautious start began at the cap (it matters only before the first mined epoch).
        fresh = SteeredKappa(**{k: state[k] for k in keys}, min_share_scale=state.get("min_share_scale", 1.0),
                             cautious_start=state.get("cautious_start", False))  # fmt: skip
        kappa = state["kappa"]
        if kappa is not None and not (fresh.kappa_min <= float(kappa) <= fresh.kappa_max):
            raise ValueError(f"state['kappa']: {kappa} lies outside [{fresh.kappa_min}, {fresh.kappa_max}]")
        self.__dict__.update(fresh.__dict__)
        self._kappa = None if kappa is None else float(kappa)
        self._share_scale = float(state.get("share_scale", 1.0))
        self._history = [SteerRecord(**r) for r in state["history"]]

    def __repr__(self) -> str:
        return (
            f"SteeredKappa(kappa={self._kappa}, target_error={self.target_error:g}, window={self.window}, "
            f"kappa_min={self.kappa_min:g}, kappa_max={self.kappa_max:g}, epochs={len(self._history)})"
        )


def _line_fit(es: np.ndarray, ks: np.ndarray, target: float) -> float | None:
    """``α·target + β`` of the least-squares line κ = α·e + β, or ``None`` if degenerate or α >= 0."""
    e_mean = es.mean()
    var = float(((es - e_mean) ** 2).sum())
    if var <= 1e-12 * max(1.0, float((es**2).sum())):
        return None
    alpha = float(((es - e_mean) * (ks - ks.mean())).sum()) / var
    if not math.isfinite(alpha) or alpha >= 0:
        return None
    nxt = alpha * target + float(ks.mean()) - alpha * float(e_mean)
    return nxt if math.isfinite(nxt) else None
