"""Smart-mining batches: each epoch's triplet plan (:class:`~smartmine.smart.SmartMiner`) cut into training steps."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from smartmine.smart import EmbeddingCache, SmartMiner, TripletPlan
from smartmine.training.batch_source import NUM_GALLERY_ANCHORS, Batch, EmbedTrain, Loader, RecordMined, Triplets
from smartmine.training.distributed import DistInfo
from smartmine.training.errors import TrainingError, fault_point
from smartmine.training.runtime import epoch_seed

PLAN_STATS = (
    "kappa", "anchors_with_negatives", "mined_triplets", "random_triplets", "index_seconds", "search_seconds",
    "selection_seconds", "shortfall", "mined_planned", "kappa_cap", "t_q10", "t_q50", "t_q90", "list_recall",
    "check_seconds", "mined_fraction", "warm_start", "drift_recall", "warm_joined", "index",
)
"""Statistics of :meth:`SmartMiner.plan_epoch` that go into the metrics row, in this order."""

BatchMiner = Callable[[torch.Tensor, torch.Tensor], Triplets]
"""An in-batch miner: ``(embeddings (B, D), labels (B,)) -> (a, p, n)`` rows of the batch."""


def _fixed_triplets(triplets: Triplets, batch_miner: BatchMiner | None = None) -> Any:
    """A batch's ``mine``: the plan's triplets, whatever the embeddings, followed by the triplets ``batch_miner``
    finds among the batch's images (when given)."""

    def mine(embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        planned = tuple(t.to(embeddings.device) for t in triplets)
        if batch_miner is None:
            return planned  # type: ignore[return-value]
        extra = batch_miner(embeddings, labels)
        return tuple(torch.cat([p, e.to(p.device)]) for p, e in zip(planned, extra, strict=True))  # type: ignore

    return mine


class SmartTripletSource:
    """Batches of ``triplets_per_batch`` consecutive plan triplets, each with the distinct images they need.

    Mined epochs embed the whole training set first (``embed_train(None)``), or, with an :class:`EmbeddingCache`,
    reuse the last epoch's training forward passes and embed only the rows those did not cover.

    Args:
        miner: the :class:`SmartMiner` that plans every epoch (its state is checkpointed here).
        labels: ``(N,)`` int64 training labels.
        loader: see :data:`~smartmine.training.batch_source.Loader`.
        triplets_per_batch: triplets per training step.
        count_mined_only: the training error counts only the plan's mined triplets (default False: all).
        cache: embedding cache fed by :meth:`observe` (default ``None``: a fresh inference pass every mined epoch).
        dist: distributed setting; rank ``r`` trains on shard ``r`` of the plan, which every rank must share.
        seed: the run's seed (picks the report's fixed gallery anchors).
        record: where the report's mined-triplet sample goes (default ``None``: nowhere).
        batch_miner_factory: ``factory(seed)`` returns an in-batch miner, built per epoch with the epoch's seed, whose
            triplets among each batch's images (up to ``3 × triplets_per_batch`` images of a few per class) are
            trained on after the plan's; they never count towards the training error (default ``None``: the plan's
            triplets only). ``mining.batch_mining``; docs/ARCHITECTURE.md, "Smart mining".
    """

    def __init__(
        self,
        miner: SmartMiner,
        labels: np.ndarray,
        loader: Loader,
        *,
        triplets_per_batch: int,
        count_mined_only: bool = False,
        cache: EmbeddingCache | None = None,
        dist: DistInfo | None = None,
        seed: int = 0,
        record: RecordMined | None = None,
        batch_miner_factory: Callable[[int], BatchMiner] | None = None,
    ) -> None:
        self.miner = miner
        self.labels = np.asarray(labels, dtype=np.int64)
        self.loader = loader
        self.triplets_per_batch = triplets_per_batch
        self.count_mined_only = count_mined_only
        self.cache = cache
        self.dist = dist if dist is not None else DistInfo()
        self.seed = seed
        self.record = record
        self.gallery_anchors: list[int] | None = None
        """Training anchors whose mined triplet the report shows (fixed at the first mined epoch)."""
        self.batch_miner_factory = batch_miner_factory
        self._batch_miner: BatchMiner | None = None
        self._steps: list[tuple[np.ndarray, Triplets, np.ndarray]] = []
        self._mined = False  # whether the current epoch's plan was mined (not a warm-up epoch)

    def start_epoch(self, epoch: int, embed_train: EmbedTrain) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if self.cache is not None:
            self.cache.new_epoch()  # rows written last epoch are now one epoch old: the most the cache allows
        emb = None if self.miner.is_warmup(epoch - 1) else self._training_embeddings(embed_train, row)
        self._mined = emb is not None
        fault_point(f"mining:{epoch}")
        plan, stats = self.miner.plan_epoch(emb, self.labels, epoch - 1)
        row.update({k: stats[k] for k in PLAN_STATS if k in stats})
        self._check_same_plan(plan, epoch)
        if emb is not None and self.record is not None:
            self._record_sample(epoch, emb, stats)
        row["mining_seconds"] = row.get("embed_seconds", 0.0) + sum(
            row.get(k, 0.0) or 0.0 for k in ("index_seconds", "search_seconds", "check_seconds", "selection_seconds")
        )
        if self.batch_miner_factory is not None:
            self._batch_miner = self.batch_miner_factory(epoch_seed(self.seed, epoch))
        shard = plan.shard(self.dist.rank, self.dist.world_size)
        self._steps = []
        for b in shard.batches(self.triplets_per_batch):
            indices, rows = b.to_batch()
            self._steps.append((indices, rows, np.asarray(b.is_mined, dtype=bool)))
        return row

    def _training_embeddings(self, embed_train: EmbedTrain, row: dict[str, Any]) -> torch.Tensor:
        t = time.perf_counter()
        if self.cache is not None:
            missing = self.cache.missing()
            if len(missing):
                self.cache.update(missing, embed_train(missing))
            emb = torch.from_numpy(self.cache.get())
            row["cache_refreshed_rows"] = len(missing)
        else:
            emb = embed_train(None)
        row["embed_seconds"] = time.perf_counter() - t
        return emb

    def __iter__(self) -> Iterator[Batch]:
        loader = self.loader([indices.tolist() for indices, _, _ in self._steps])
        extra = self._batch_miner
        for (images, labels, idx), (_, rows, is_mined) in zip(loader, self._steps, strict=True):
            counted = torch.from_numpy(is_mined) if self.count_mined_only else None
            if counted is None and extra is not None:  # the plan's triplets count, the in-batch ones never
                counted = torch.ones(len(is_mined), dtype=torch.bool)
            yield Batch(images, labels, idx, _fixed_triplets(rows, extra), counted)

    def __len__(self) -> int:
        return len(self._steps)

    def observe(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.update(indices.numpy(), embeddings.cpu())

    def end_epoch(self, train_error: float | None) -> dict[str, Any]:
        # Also when nothing was counted (error None): the steered controller must then lower κ, never freeze.
        out: dict[str, Any] = {"next_kappa": self.miner.update_error(train_error)}
        if self._mined and self.miner.adaptive:
            out["target_error"] = self.miner.controller.target_error
        return out

    def holdout_score(self, score: float) -> dict[str, Any]:
        # Every rank scores the held-out classes itself, with identical weights: the guard stays identical everywhere.
        if self.miner.holdout_guard is None:
            return {}
        return {"guard_scale": self.miner.update_holdout(score)}

    def progress(self) -> dict[str, str]:
        # No κ during warm-up epochs: they train on random triplets, κ plays no part.
        kappa = self.miner.kappa
        return {"κ": f"{kappa:.3g}"} if self._mined and kappa is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"smart": self.miner.state_dict(), "gallery_anchors": self.gallery_anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("smart") is not None:
            self.miner.load_state_dict(state["smart"])
        self.gallery_anchors = state.get("gallery_anchors")

    def _check_same_plan(self, plan: TripletPlan, epoch: int) -> None:
        """Under torch.distributed every rank must have mined the identical plan (same embeddings, seed and κ)."""
        if not self.dist.enabled:
            return
        import torch.distributed as dist

        h = hashlib.sha256()
        for part in (plan.a, plan.p, plan.n):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        digests: list = [None] * self.dist.world_size
        dist.all_gather_object(digests, h.hexdigest())
        if len(set(digests)) != 1:
            raise TrainingError(f"epoch {epoch}: ranks mined different triplet plans ({digests})")

    def _record_sample(self, epoch: int, emb: torch.Tensor, stats: dict[str, Any]) -> None:
        """The first mined triplet of each gallery anchor (anchors drawn once, at the first mined epoch)."""
        from smartmine.run_folder import first_triplet_per_anchor

        sel = self.miner.last_selection
        if sel is None:
            return
        if self.gallery_anchors is None:
            mined = np.unique(np.asarray(sel.anchors))
            if len(mined) == 0:
                return
            rng = np.random.default_rng(self.seed)
            pick = rng.choice(mined, size=min(NUM_GALLERY_ANCHORS, len(mined)), replace=False)
            self.gallery_anchors = sorted(int(a) for a in pick)
        triplets = first_triplet_per_anchor(
            np.asarray(sel.anchors), np.asarray(sel.positives), np.asarray(sel.negatives), self.gallery_anchors
        )
        assert self.record is not None
        self.record(epoch, "smart", triplets, emb, kappa=stats.get("kappa"))
