"""A held-out signal for smart mining: training classes set aside to see whether mined triplets still generalise.

The κ controller keeps the *training* error at its target, which says nothing about the unseen classes: on a small
training set, hard mined triplets fit the training classes fastest and can then cost accuracy on new ones
(docs/BENCHMARKS.md, "cub100 on frozen ImageNet features"). ``data.holdout_classes`` sets a few training classes
aside (:func:`smartmine.data.splits.holdout_rows`); their retrieval score after every epoch feeds
:class:`HoldoutGuard`, which shrinks the mined share of the plan once that score stops improving, the way a plateau
scheduler lowers a learning rate.
"""

from __future__ import annotations

import math
from typing import Any

from smartmine._validation import check_positive_int


class HoldoutGuard:
    """Scales the planned mined share down when the held-out score stops improving.

    After every epoch :meth:`update` gets the held-out score (higher is better, e.g. MAP@R). A score above the best so
    far by more than ``min_delta`` resets the count; after ``patience`` mined epochs in a row without one, :attr:`scale`
    is multiplied by ``factor`` and the count restarts. Random (warm-up) epochs only move the best score: they cannot
    blame mining. The scale never grows back, as a plateau learning-rate schedule never raises the rate: with the score
    past its peak, the run drifts towards random triplets, which are the safer choice in that regime.

    Args:
        patience: mined epochs without a new best before the scale shrinks, >= 1 (default 2).
        factor: multiplier applied to the scale, in (0, 1) (default 0.5).
        min_delta: improvement that counts as a new best, >= 0 (default 0).
    """

    def __init__(self, patience: int = 2, factor: float = 0.5, min_delta: float = 0.0) -> None:
        self.patience = check_positive_int(patience, "patience")
        factor, min_delta = float(factor), float(min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor: expected a value in (0, 1), got {factor}")
        if not (math.isfinite(min_delta) and min_delta >= 0.0):
            raise ValueError(f"min_delta: expected a finite value >= 0, got {min_delta}")
        self.factor, self.min_delta = factor, min_delta
        self.scale = 1.0
        """Factor in (0, 1] on the planned mined share of the next epochs."""
        self.best = -math.inf
        self.stale = 0
        """Mined epochs since the last new best (or the last shrink)."""

    def update(self, score: float, mined: bool) -> float:
        """Record the held-out ``score`` of the epoch just trained (``mined``: whether its plan was mined) and return
        :attr:`scale` for the next epoch."""
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"score: expected a finite held-out score, got {score}")
        if score > self.best + self.min_delta:
            self.best, self.stale = score, 0
        elif mined:
            self.stale += 1
            if self.stale >= self.patience:
                self.scale *= self.factor
                self.stale = 0
        return self.scale

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "factor": self.factor, "min_delta": self.min_delta, "scale": self.scale,
                "best": self.best, "stale": self.stale}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fresh = HoldoutGuard(state["patience"], state["factor"], state["min_delta"])
        self.__dict__.update(fresh.__dict__)
        self.scale, self.best, self.stale = float(state["scale"]), float(state["best"]), int(state["stale"])

    def __repr__(self) -> str:
        return f"HoldoutGuard(patience={self.patience}, factor={self.factor:g}, scale={self.scale:g})"
