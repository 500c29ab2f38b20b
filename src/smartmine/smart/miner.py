"""The epoch-level smart miner of [SM] and the embedding cache that can feed it.

:class:`SmartMiner` turns the embeddings of the whole training set into the triplet plan of one epoch
(ALGORITHMS.md §3): neighbour index → ``k`` nearest neighbours of every point → Algorithm 1 with the current κ →
a shuffled mix of mined and random triplets. The first ``warmup_epochs`` epochs are all random (no index).

:class:`EmbeddingCache` (our addition) collects the embeddings computed by the training forward passes of an epoch,
so that the next epoch can be mined from them (stale by at most one epoch) instead of a separate inference pass.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from smartmine._validation import ArrayLike, as_numpy, check_embeddings, check_labels, check_positive_int
from smartmine.index.base import NeighbourIndex
from smartmine.smart.controller import AdaptiveKappa, SteeredKappa
from smartmine.smart.holdout import HoldoutGuard
from smartmine.smart.list_extras import widen_lists
from smartmine.smart.list_recall import neighbour_list_recall
from smartmine.smart.plan import TripletPlan, build_epoch_plan
from smartmine.smart.selection import SELECTION_MODES, select_triplets
from smartmine.smart.thresholds import kappa_for_share, kappa_thresholds

LIST_RECALL_WARNING = 0.9  # below this, mined negatives are often not the nearest ones
BUDGET_PER_NEIGHBOUR = 10  # FANNG search budget per listed neighbour when it scales with k (recall >= 0.9 at k ~ 120)


def default_index_factory() -> NeighbourIndex:
    """A fresh exact (brute-force, torch) index on the CPU."""
    from smartmine.index.exact import ExactIndex

    return ExactIndex()


def default_k(labels: np.ndarray) -> int:
    """ALGORITHMS.md §3 default neighbour count ``max(64, 2 × largest class)``, capped at ``N − 1``."""
    n = labels.shape[0]
    largest = int(np.unique(labels, return_counts=True)[1].max()) if n else 0
    return max(1, min(max(64, 2 * largest), n - 1))


class SmartMiner:
    """Dataset-wide smart mining: one triplet plan per epoch from the training set's neighbour lists.

    Args:
        index_factory: zero-argument callable returning a fresh :class:`~smartmine.index.base.NeighbourIndex`
            (default: :func:`default_index_factory`, exact search on the CPU). A new index is built every epoch.
        k: neighbours per point (default ``None``: ``max(64, 2 × largest class)``), capped at ``N − 1``.
        kappa_controller: the κ controller used when ``adaptive``: :class:`~smartmine.smart.controller.SteeredKappa`
            (ours) or :class:`~smartmine.smart.controller.AdaptiveKappa` (the paper's; default ``AdaptiveKappa()``).
        adaptive: steer κ with the controller (default True) or keep the fixed ``kappa``.
        kappa: fixed κ when not adaptive (default 16).
        warmup_epochs: leading epochs trained on random triplets only (default 2, as [SM]).
        mined_fraction: fraction ``p`` of mined triplets in a plan (default 0.5).
        selection: ``"strict"`` (default, the paper) or ``"margin_aware"`` (see :func:`select_triplets`).
        margin: triplet margin ``m`` of the margin-aware rule (default 0.2).
        triplets_per_epoch: plan length (default ``None``: ``N``, one triplet per training image).
        triplets_per_anchor: Algorithm 1 slots per anchor (default 1).
        seed: base seed; the randomness of epoch ``e`` depends only on ``(seed, e)``, so plans are reproducible and
            identical on every distributed rank that passes the same embeddings.
        list_recall_sample: points whose lists are checked against exact search every mined epoch (default 256;
            0 turns the check off). Below 0.9 a warning names the index option that governs the lists.
        scale_search_budget: raise an index's ``search_budget`` (FANNG) to ``10 × k`` when smaller (default True;
            pass False when the user fixed the budget).
        match_list_length: raise an index's ``knn_k`` (FANNG's NN-descent list length) to ``k`` before it builds, so
            the construction's lists are the mining lists and no second NN-descent pass extends them (default True;
            pass False when the user fixed ``knn_k``); faster and with better lists (docs/BENCHMARKS.md, "Warm start
            inside training").
        warm_start: start each mined epoch's index from the previous mined epoch's neighbour lists when the index
            can (:meth:`~smartmine.index.base.NeighbourIndex.build_warm`: FANNG's NN-descent, with a drift check that
            falls back to a cold build); default True. The lists are part of :meth:`state_dict`, so resume stays
            exact.
        holdout_guard: a :class:`~smartmine.smart.holdout.HoldoutGuard` whose ``scale`` multiplies the planned mined
            share; fed by :meth:`update_holdout` (default ``None``: no held-out signal).
        extra_positives: same-class points appended to every neighbour list before selection (default 0); with
            ``extra_negatives`` see :func:`~smartmine.smart.list_extras.widen_lists`.
        extra_negatives: uniformly random other-class points appended to every neighbour list (default 0).

    Attributes:
        last_selection: the :class:`~smartmine.smart.selection.SelectionResult` of the last mined epoch (``None``
            after a warm-up epoch), e.g. for galleries of mined triplets.
    """

    def __init__(
        self,
        index_factory: Callable[[], NeighbourIndex] = default_index_factory,
        k: int | None = None,
        kappa_controller: AdaptiveKappa | SteeredKappa | None = None,
        adaptive: bool = True,
        kappa: float = 16.0,
        warmup_epochs: int = 2,
        mined_fraction: float = 0.5,
        selection: str = "strict",
        margin: float = 0.2,
        triplets_per_epoch: int | None = None,
        triplets_per_anchor: int = 1,
        seed: int = 0,
        list_recall_sample: int = 256,
        scale_search_budget: bool = True,
        match_list_length: bool = True,
        warm_start: bool = True,
        holdout_guard: HoldoutGuard | None = None,
        extra_positives: int = 0,
        extra_negatives: int = 0,
    ) -> None:
        if not callable(index_factory):
            raise ValueError("index_factory: expected a zero-argument callable returning a NeighbourIndex")
        self.index_factory = index_factory
        self.k = None if k is None else check_positive_int(k, "k")
        self.controller = kappa_controller if kappa_controller is not None else AdaptiveKappa()
        if not isinstance(self.controller, (AdaptiveKappa, SteeredKappa)):
            raise ValueError(
                f"kappa_controller: expected a SteeredKappa or AdaptiveKappa, got {type(self.controller).__name__}"
            )
        self.adaptive = bool(adaptive)
        self.fixed_kappa = float(kappa)
        if not (np.isfinite(self.fixed_kappa) and self.fixed_kappa > 0):
            raise ValueError(f"kappa: expected a finite value > 0, got {kappa}")
        self.warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
        self.mined_fraction = float(mined_fraction)
        if not 0.0 <= self.mined_fraction <= 1.0:
            raise ValueError(f"mined_fraction: expected a value in [0, 1], got {mined_fraction}")
        if selection not in SELECTION_MODES:
            raise ValueError(f"selection: expected one of {SELECTION_MODES}, got {selection!r}")
        self.selection = selection
        self.margin = float(margin)
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin: expected a finite value >= 0, got {margin}")
        self.triplets_per_epoch = (
            None if triplets_per_epoch is None else check_positive_int(triplets_per_epoch, "triplets_per_epoch")
        )
        self.triplets_per_anchor = check_positive_int(triplets_per_anchor, "triplets_per_anchor")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.list_recall_sample = check_positive_int(list_recall_sample, "list_recall_sample", minimum=0)
        self.scale_search_budget = bool(scale_search_budget)
        self.match_list_length = bool(match_list_length)
        self.warm_start = bool(warm_start)
        if holdout_guard is not None and not isinstance(holdout_guard, HoldoutGuard):
            raise ValueError(f"holdout_guard: expected a HoldoutGuard or None, got {type(holdout_guard).__name__}")
        self.holdout_guard = holdout_guard
        self.extra_positives = check_positive_int(extra_positives, "extra_positives", minimum=0)
        self.extra_negatives = check_positive_int(extra_negatives, "extra_negatives", minimum=0)
        self._warm_lists: np.ndarray | None = None  # (N, K) point ids of the last mined epoch's lists
        self._last_plan_mined = False
        self._last_fill = 1.0
        self.last_selection = None

    @property
    def steered(self) -> bool:
        """Whether κ is steered by :class:`~smartmine.smart.controller.SteeredKappa`."""
        return self.adaptive and isinstance(self.controller, SteeredKappa)

    @property
    def kappa(self) -> float | None:
        """The κ the next mined epoch uses (a steered κ may still be lowered by that epoch's cap); ``None`` while
        ``auto`` κ₀ waits for the first mined epoch's thresholds."""
        return self.controller.kappa if self.adaptive else self.fixed_kappa

    @property
    def guard_scale(self) -> float:
        """The held-out guard's factor on the planned mined share (1.0 without a guard)."""
        return 1.0 if self.holdout_guard is None else self.holdout_guard.scale

    def update_holdout(self, score: float) -> float:
        """Report the held-out score of the epoch just trained; returns the guard's scale for the next epochs."""
        if self.holdout_guard is None:
            raise RuntimeError("SmartMiner.update_holdout: the miner has no holdout_guard")
        return self.holdout_guard.update(score, mined=self._last_plan_mined)

    def is_warmup(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is a random warm-up epoch."""
        return epoch < self.warmup_epochs

    def plan_epoch(self, embeddings: ArrayLike | None, labels: ArrayLike, epoch: int) -> tuple[TripletPlan, dict]:
        """The triplet plan of ``epoch`` (0-based) and its statistics.

        Args:
            embeddings: ``(N, D)`` finite embeddings of the whole training set (NumPy or torch, any device), taken
                with the current network; may be ``None`` during warm-up epochs.
            labels: ``(N,)`` integer labels.
            epoch: 0-based epoch number (warm-up when ``epoch < warmup_epochs``).

        Returns:
            ``(plan, stats)``; ``stats`` holds ``epoch``, ``warmup``, ``kappa`` (the κ used, ``None`` in warm-up),
            ``k``, ``anchors_with_negatives``, ``anchors_mined``, ``anchors_without_positive``,
            ``available_mined`` (triplets Algorithm 1 produced), ``mined_triplets``, ``random_triplets``,
            ``shortfall`` (requested mined triplets replaced by random ones), ``mined_planned``, ``mined_fraction``
            (the planned mined share of the epoch: ``mined_fraction`` times the held-out guard's scale
            and the steered controller's ``share_scale``; ``None`` in warm-up), ``random_positives``,
            ``kappa_cap`` (largest κ at which the planned share of anchors has a valid negative), ``t_q10`` /
            ``t_q50`` / ``t_q90`` (quantiles of the thresholds ``t_a``), ``list_recall`` (``None`` when unchecked),
            ``index`` (the neighbour index's :attr:`~smartmine.index.base.NeighbourIndex.name`, ``None`` in
            warm-up), ``warm_start`` (1.0 when the index started from the previous epoch's lists, else 0.0; ``None`` in
            warm-up), ``drift_recall`` (their recall under the new embeddings, ``None`` without a warm start),
            ``warm_joined`` (after a warm start: 1.0 when NN-descent joins ran, 0.0 when re-ranking the previous lists
            was enough, see ``FanngIndex(warm_reserve=...)``; ``None`` otherwise),
            ``index_seconds``, ``search_seconds``, ``selection_seconds``.

        Raises:
            ValueError: NaN/inf or mis-shaped embeddings, fewer than 2 points, no class with two images, or a single
                class (no negatives exist).
        """
        epoch = check_positive_int(epoch, "epoch", minimum=0)
        lab = check_labels(labels).cpu().numpy()
        n = lab.shape[0]
        if n < 2:
            raise ValueError(f"labels: smart mining needs at least 2 training points, got {n}")
        if np.unique(lab).size < 2:
            raise ValueError("labels: the whole training set is one class, so no triplet has a negative")
        num_triplets = self.triplets_per_epoch if self.triplets_per_epoch is not None else n
        rng = np.random.default_rng([self.seed, epoch])
        stats: dict[str, Any] = {
            "epoch": epoch, "warmup": True, "kappa": None, "k": None, "anchors_with_negatives": 0,
            "anchors_mined": 0, "anchors_without_positive": None, "available_mined": 0, "random_positives": 0,
            "kappa_cap": None, "t_q10": None, "t_q50": None, "t_q90": None, "list_recall": None, "warm_start": None,
            "drift_recall": None, "warm_joined": None, "index": None,
            "index_seconds": 0.0, "search_seconds": 0.0, "selection_seconds": 0.0,
        }  # fmt: skip

        selection = None
        planned_share = self.mined_fraction * self.guard_scale  # before the steered controller's share_scale
        share_scale = 1.0  # the steered controller shrinks the plan when its κ exceeds the cap
        if not self.is_warmup(epoch):
            if embeddings is None:
                raise ValueError(f"embeddings: required for mined epoch {epoch} (warm-up ends at {self.warmup_epochs})")
            emb = check_embeddings(embeddings, "embeddings", min_rows=2)
            if emb.shape[0] != n:
                raise ValueError(f"embeddings: {emb.shape[0]} rows do not match {n} labels")
            k = min(self.k, n - 1) if self.k is not None else default_k(lab)
            t0 = time.perf_counter()
            index = self.index_factory()
            knn_k = getattr(index, "knn_k", None)
            if self.match_list_length and isinstance(knn_k, int) and knn_k < k:
                index.knn_k = k
            # Lists of another training set (a different N) are not offered; build_warm(x, None) is a cold build.
            lists = self._warm_lists if self.warm_start else None
            index.build_warm(emb, lists if lists is not None and lists.shape[0] == n else None)
            budget = getattr(index, "search_budget", None)
            if self.scale_search_budget and isinstance(budget, int) and budget < BUDGET_PER_NEIGHBOUR * k:
                index.search_budget = BUDGET_PER_NEIGHBOUR * k
            t1 = time.perf_counter()
            sq_dist, nbr = index.neighbours(k)
            t2 = time.perf_counter()
            self._warm_lists = index.warm_lists() if self.warm_start else None
            index_stats = getattr(index, "stats_", None) or {}
            warm = float(index_stats.get("warm_start", 0.0))
            stats.update(warm_start=warm, drift_recall=index_stats.get("drift_recall"),
                         warm_joined=index_stats.get("warm_joined") if warm else None,
                         index=getattr(index, "name", type(index).__name__))  # fmt: skip
            # The recall check looks at the index's own lists; selection and thresholds at the widened ones.
            recall_lists = nbr
            nbr, sq_dist = widen_lists(emb, nbr, sq_dist, lab, np.random.default_rng([self.seed, epoch, 2]),
                                       self.extra_positives, self.extra_negatives)  # fmt: skip
            thresholds = kappa_thresholds(nbr, sq_dist, lab, self.selection)
            need = min(1.0, 1.1 * round(planned_share * num_triplets) / (n * self.triplets_per_anchor))
            if self.steered:
                kappa = self.controller.propose(thresholds, need)
                share_scale = self.controller.share_scale
            else:
                kappa = self.kappa
            t_q = thresholds.quantiles((0.1, 0.5, 0.9))
            # Recorded for every controller, fixed κ too (the steered one has just computed it).
            cap = _finite_or_none(self.controller.last_cap if self.steered else kappa_for_share(thresholds, need))
            stats.update(kappa_cap=cap, t_q10=t_q[0], t_q50=t_q[1], t_q90=t_q[2])
            if self.list_recall_sample:
                recall = neighbour_list_recall(emb, recall_lists, np.random.default_rng([self.seed, epoch, 1]),
                                               self.list_recall_sample)  # fmt: skip
                stats["list_recall"] = recall
                if recall < LIST_RECALL_WARNING:
                    warnings.warn(
                        f"epoch {epoch}: the neighbour lists reach recall {recall:.2f} against exact search (below "
                        f"{LIST_RECALL_WARNING}); {_list_recall_remedy(index)}",
                        stacklevel=2,
                    )
            t_checks = time.perf_counter()
            selection = select_triplets(
                nbr, sq_dist, lab, kappa, rng,
                triplets_per_anchor=self.triplets_per_anchor, selection=self.selection, margin=self.margin,
            )  # fmt: skip
            t3 = time.perf_counter()
            stats.update(
                warmup=False, kappa=kappa, k=k,
                anchors_with_negatives=int(np.count_nonzero(selection.num_valid_negatives)),
                anchors_mined=selection.num_anchors_mined,
                anchors_without_positive=selection.num_without_positive,
                available_mined=selection.num_triplets, random_positives=selection.num_random_positives,
                index_seconds=t1 - t0, search_seconds=t2 - t1, check_seconds=t_checks - t2,
                selection_seconds=t3 - t_checks,
            )  # fmt: skip
        fraction = 0.0 if selection is None else planned_share * share_scale
        plan = build_epoch_plan(selection, lab, num_triplets, fraction, rng)
        planned = plan.num_mined_requested or 0
        stats.update(mined_triplets=plan.num_mined, random_triplets=plan.num_random, shortfall=plan.mined_shortfall,
                     mined_planned=planned, mined_fraction=None if selection is None else fraction)  # fmt: skip
        self._last_plan_mined = selection is not None
        self._last_fill = plan.num_mined / planned if planned else 1.0
        self.last_selection = selection
        return plan, stats

    def update_error(self, error: float | None) -> float | None:
        """Report the training error of the epoch just trained and return the κ for the next mined epoch.

        Forwarded to the controller only when adaptive and when the last plan was mined: the error of a random
        warm-up epoch says nothing about κ and would corrupt the controller's fit. ``error`` is ``None`` when the
        epoch counted no triplet (``error_counts: mined`` and nothing mined): the steered controller then lowers κ
        (a shortfall); the paper's controller has no such case and keeps κ.
        """
        if error is not None:
            error = float(error)
            if not (np.isfinite(error) and 0.0 <= error <= 1.0):
                raise ValueError(f"error: expected None or a finite fraction in [0, 1], got {error}")
        if not (self.adaptive and self._last_plan_mined):
            return self.kappa
        if self.steered:
            return self.controller.update(error, self._last_fill)
        return self.controller.update(error) if error is not None else self.kappa

    def state_dict(self) -> dict[str, Any]:
        """Resumable state: controller, fixed κ, seed and whether the last plan was mined."""
        return {
            "controller": self.controller.state_dict(),
            "fixed_kappa": self.fixed_kappa,
            "seed": self.seed,
            "last_plan_mined": self._last_plan_mined,
            "last_fill": self._last_fill,
            # int32 halves the checkpoint's share (ids < 2^31); None when warm start is off or nothing was mined yet.
            "warm_lists": None if self._warm_lists is None else torch.from_numpy(self._warm_lists.astype(np.int32)),
            "holdout_guard": None if self.holdout_guard is None else self.holdout_guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.controller.load_state_dict(state["controller"])
        self.fixed_kappa = float(state["fixed_kappa"])
        self.seed = check_positive_int(state["seed"], "state['seed']", minimum=0)
        self._last_plan_mined = bool(state["last_plan_mined"])
        self._last_fill = float(state.get("last_fill", 1.0))
        guard = state.get("holdout_guard")
        if (guard is None) != (self.holdout_guard is None):
            raise ValueError("state: the checkpoint and this miner disagree on having a holdout_guard")
        if guard is not None:
            self.holdout_guard.load_state_dict(guard)
        lists = state.get("warm_lists")
        self._warm_lists = None if lists is None else as_numpy(lists, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"SmartMiner(kappa={self.kappa}, adaptive={self.adaptive}, k={self.k}, warmup_epochs={self.warmup_epochs}"
            f", mined_fraction={self.mined_fraction:g}, selection={self.selection!r})"
        )


def _list_recall_remedy(index: NeighbourIndex) -> str:
    """What to change when an index's neighbour lists fall short: the option that governs them."""
    if getattr(index, "construction", None) == "nn_descent":
        return "raise mining.index_options.knn_iters (NN-descent lists) or use mining.index=exact"
    if hasattr(index, "search_budget"):
        return "raise mining.index_options.search_budget or use mining.index=exact"
    if hasattr(index, "ef_search"):
        return "raise mining.index_options.ef_search or use mining.index=exact"
    return "use mining.index=exact"


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


class EmbeddingCache:
    """Training-set embeddings collected from the forward passes of the epoch (our addition to [SM]).

    Call :meth:`update` with every training batch's dataset indices and embeddings; after the epoch, :meth:`get`
    returns the ``(N, D)`` matrix to mine the next epoch from, each row at most ``max_age`` epochs old (default 1:
    written during the epoch just finished). Rows the epoch did not visit (a triplet plan need not touch every image)
    make the cache incomplete: :meth:`missing` lists them so the caller can embed just those.

    Args:
        num_items: ``N``, training-set size.
        dim: ``D``, embedding dimension.
    """

    def __init__(self, num_items: int, dim: int) -> None:
        self.num_items = check_positive_int(num_items, "num_items")
        self.dim = check_positive_int(dim, "dim")
        self._emb = np.zeros((self.num_items, self.dim), np.float32)
        self._stamp = np.full(self.num_items, -1, np.int64)  # epoch counter at the last write, -1 = never
        self._epoch = 0

    def new_epoch(self) -> None:
        """Start a new epoch: rows written before now age by one epoch."""
        self._epoch += 1

    def update(self, indices: ArrayLike, embeddings: ArrayLike) -> None:
        """Store ``embeddings`` (``(B, D)``, NumPy or torch) at dataset rows ``indices`` (``(B,)``); a repeated
        index keeps its last row."""
        idx = np.asarray(indices.detach().cpu() if isinstance(indices, torch.Tensor) else indices).reshape(-1)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices: expected integer dataset indices, got dtype {idx.dtype}")
        emb = check_embeddings(embeddings, "embeddings")
        if emb.shape[0] != idx.shape[0] or emb.shape[1] != self.dim:
            raise ValueError(
                f"embeddings: expected shape ({idx.shape[0]}, {self.dim}) for {idx.shape[0]} indices, "
                f"got {tuple(emb.shape)}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_items):
            raise ValueError(f"indices: must lie in [0, {self.num_items}), got [{idx.min()}, {idx.max()}]")
        self._emb[idx] = emb.detach().cpu().float().numpy()
        self._stamp[idx] = self._epoch

    def missing(self, max_age: int = 1) -> np.ndarray:
        """Sorted dataset indices never written or older than ``max_age`` epochs (0 = written this epoch)."""
        max_age = check_positive_int(max_age, "max_age", minimum=0)
        stale = (self._stamp < 0) | (self._epoch - self._stamp > max_age)
        return np.nonzero(stale)[0]

    def complete(self, max_age: int = 1) -> bool:
        """Whether every row is filled and at most ``max_age`` epochs old."""
        return self.missing(max_age).size == 0

    def get(self, max_age: int = 1) -> np.ndarray:
        """The ``(N, D)`` float32 matrix (a copy); ``ValueError`` if some row is missing or too old."""
        miss = self.missing(max_age)
        if miss.size:
            raise ValueError(
                f"EmbeddingCache: {miss.size} of {self.num_items} rows are unfilled or older than {max_age} epoch(s) "
                f"(first: {miss[:5].tolist()}); embed them and call update() first"
            )
        return self._emb.copy()

    def clear(self) -> None:
        """Forget every row."""
        self._stamp[:] = -1
