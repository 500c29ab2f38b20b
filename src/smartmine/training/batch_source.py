"""Where an epoch's batches come from: the seam between the training loop and mining.

The trainer asks a :class:`BatchSource` for one epoch of :class:`Batch` objects and never looks inside one: each
batch carries its images and its own ``mine(embeddings, labels) -> triplets``. The sources:

- :class:`InBatchSource`: random P×K batches, mined in the batch (random, semihard, hard, distance-weighted);
- :class:`GraphBatchSource`: the same miners on P×K batches composed from classes the k-NN graph confuses (ours);
- :class:`~smartmine.training.smart_source.SmartTripletSource`: dataset-wide smart mining, each batch's triplets fixed
  by the epoch's plan.

Per epoch the trainer calls ``start_epoch``, iterates (calling ``observe`` after every forward pass), then
``end_epoch`` with the epoch's training error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from smartmine.training.runtime import epoch_seed

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(a, p, n)``: 1-D int64 row indices into the embeddings of one batch."""

EmbedTrain = Callable[[np.ndarray | None], torch.Tensor]
"""``embed_train(indices)``: ``(len(indices), D)`` float32 embeddings of those training rows with the current model on
this process; ``embed_train(None)``: the whole training set ``(N, D)``, identical on every distributed rank."""

Loader = Callable[[Iterable[list[int]]], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]
"""``loader(batch_sampler)``: ``(images, labels, dataset_indices)`` for every list of training indices it yields."""

RecordMined = Callable[..., None]
"""``record(epoch, strategy, triplets, embeddings, *, kappa=None, index_of=None)``: keep a mined-triplet sample for the
report (:func:`smartmine.training.run_folder.write_mined` bound to a run folder)."""

NUM_GALLERY_ANCHORS = 8
"""Training anchors whose mined triplet the report shows per epoch."""


@dataclass
class Batch:
    """One training step's data.

    Attributes:
        images: ``(B, ...)`` images as the loader gives them (CPU).
        labels: ``(B,)`` int64 labels.
        indices: ``(B,)`` int64 training-split rows of the images.
        mine: ``mine(embeddings (B, D), labels (B,)) -> (a, p, n)`` row triplets of this batch (embeddings detached,
            both on the training device).
        counted: ``(T,)`` bool mask over the first ``T`` triplets ``mine`` returns, those the training error may
            count (``None``: all of them); triplets after the first ``T`` (a smart batch's in-batch additions,
            ``mining.batch_mining``) never count.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    mine: Callable[[torch.Tensor, torch.Tensor], Triplets]
    counted: torch.Tensor | None = None


class BatchSource(Protocol):
    """What the trainer needs from a source of batches (see the module docstring for the call order)."""

    def start_epoch(self, epoch: int, embed_train: EmbedTrain) -> dict[str, Any]:
        """Prepare epoch ``epoch`` (1-based); return metrics-row entries (mining statistics, timings)."""
        ...

    def __iter__(self) -> Iterator[Batch]:
        """The batches of the epoch prepared by :meth:`start_epoch`, in training order."""
        ...

    def __len__(self) -> int:
        """Number of batches of the prepared epoch."""
        ...

    def observe(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """See a training forward pass: ``(B,)`` dataset rows and their detached ``(B, D)`` embeddings."""
        ...

    def end_epoch(self, train_error: float | None) -> dict[str, Any]:
        """The epoch is trained (its training error, ``None`` when nothing was counted); return metrics-row entries."""
        ...

    def holdout_score(self, score: float) -> dict[str, Any]:
        """The held-out MAP@R of the epoch just trained (``data.holdout_classes``); return metrics-row entries."""
        ...

    def progress(self) -> dict[str, str]:
        """Extra fields for the progress bar."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Resumable state, stored among the checkpoint's extras."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from the checkpoint's extras."""
        ...


class InBatchSource:
    """Random P×K batches (:class:`~smartmine.data.samplers.PKBatchSampler`) mined by an in-batch miner.

    Args:
        labels: ``(N,)`` int64 training labels.
        loader: see :data:`Loader`.
        miner_factory: ``miner_factory(seed)`` returns the epoch's in-batch miner, seeded with the epoch's seed.
        classes_per_batch, samples_per_class: P and K.
        strategy: the miner's name, written into the report's samples (default ``"in-batch"``).
        seed: the run's seed (default 0); sampler and miners depend only on ``(seed, epoch)``.
        num_replicas, rank: distributed sharding of the batches (defaults 1, 0).
        record: where a mined sample for the report goes after every epoch (default ``None``: nowhere).
    """

    def __init__(
        self,
        labels: np.ndarray,
        loader: Loader,
        miner_factory: Callable[[int], Callable[[torch.Tensor, torch.Tensor], Triplets]],
        *,
        classes_per_batch: int,
        samples_per_class: int,
        strategy: str = "in-batch",
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        record: RecordMined | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.loader = loader
        self.miner_factory = miner_factory
        self.classes_per_batch, self.samples_per_class = classes_per_batch, samples_per_class
        self.strategy = strategy
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.record = record
        self._sampler: Any = None
        self._miner: Callable[[torch.Tensor, torch.Tensor], Triplets] | None = None
        self._embed_train: EmbedTrain | None = None
        self._epoch = 0

    def _make_sampler(self, epoch: int, embed_train: EmbedTrain, row: dict[str, Any]) -> Any:
        from smartmine.data.samplers import PKBatchSampler

        return PKBatchSampler(
            self.labels, self.classes_per_batch, self.samples_per_class, seed=self.seed,
            num_replicas=self.num_replicas, rank=self.rank,
        )  # fmt: skip

    def start_epoch(self, epoch: int, embed_train: EmbedTrain) -> dict[str, Any]:
        row: dict[str, Any] = {}
        self._epoch, self._embed_train = epoch, embed_train
        self._sampler = self._make_sampler(epoch, embed_train, row)
        self._sampler.set_epoch(epoch)
        self._miner = self.miner_factory(epoch_seed(self.seed, epoch))
        return row

    def __iter__(self) -> Iterator[Batch]:
        if self._miner is None:
            raise RuntimeError("start_epoch() must be called before iterating")
        for images, labels, idx in self.loader(self._sampler):
            yield Batch(images, labels, idx, self._miner)

    def __len__(self) -> int:
        return 0 if self._sampler is None else len(self._sampler)

    def observe(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        pass  # in-batch mining needs nothing beyond the batch itself

    def end_epoch(self, train_error: float | None) -> dict[str, Any]:
        if self.record is not None and self._embed_train is not None:
            self._record_probe(self._epoch, self._embed_train)
        return {}

    def holdout_score(self, score: float) -> dict[str, Any]:
        return {}  # nothing here is steered by the held-out classes

    def progress(self) -> dict[str, str]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}  # everything is derived from (seed, epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def _record_probe(self, epoch: int, embed_train: EmbedTrain) -> None:
        """Mine a fixed probe batch (P classes × K images, the same every epoch) with the epoch's miner and record the
        first triplet of each class's first image."""
        from smartmine.run_folder import first_triplet_per_anchor

        P, K = self.classes_per_batch, self.samples_per_class
        rng = np.random.default_rng(self.seed)
        counts = np.bincount(self.labels)
        eligible = np.flatnonzero(counts >= 2)
        classes = rng.choice(eligible, size=min(P, len(eligible)), replace=False)
        probe = np.concatenate([
            rng.choice(np.flatnonzero(self.labels == c), size=K, replace=bool(counts[c] < K)) for c in classes
        ])
        emb = embed_train(probe)
        miner = self.miner_factory(epoch_seed(self.seed, epoch))
        a, p, n = (t.cpu().numpy() for t in miner(emb, torch.from_numpy(self.labels[probe])))
        wanted_rows = [i * K for i in range(min(NUM_GALLERY_ANCHORS, len(classes)))]
        rows = first_triplet_per_anchor(a, p, n, wanted_rows)
        triplets = [(int(probe[r]), None if q is None else int(probe[q]), None if z is None else int(probe[z]))
                    for r, q, z in rows]
        index_of = {int(idx): r for r, idx in enumerate(probe)}
        assert self.record is not None
        self.record(epoch, self.strategy, triplets, emb, index_of=index_of)


class GraphBatchSource(InBatchSource):
    """:class:`InBatchSource` whose P×K batches, after the warm-up, come from classes the k-NN graph confuses.

    Every mined epoch embeds the training set, builds a neighbour index, counts class confusion among the ``k``
    nearest neighbours (:func:`~smartmine.smart.graph_batches.neighbour_confusion`) and draws the epoch's batches
    with :class:`~smartmine.smart.graph_batches.GraphPKBatchSampler`.

    Args:
        num_classes: ``C`` (labels lie in ``[0, C)``).
        index_factory: zero-argument callable returning a fresh neighbour index.
        k: neighbours per point (``None``: smart mining's default ``max(64, 2 × largest class)``).
        warmup_epochs: leading epochs with random P×K batches (default 0).
        **kwargs: as :class:`InBatchSource`.
    """

    def __init__(
        self,
        labels: np.ndarray,
        loader: Loader,
        miner_factory: Callable[[int], Callable[[torch.Tensor, torch.Tensor], Triplets]],
        *,
        num_classes: int,
        index_factory: Callable[[], Any],
        k: int | None = None,
        warmup_epochs: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(labels, loader, miner_factory, **kwargs)
        self.num_classes, self.index_factory, self.k, self.warmup_epochs = num_classes, index_factory, k, warmup_epochs
        self.confusion: np.ndarray | None = None
        """``(C, C)`` confusion counts of the last mined epoch."""

    def _make_sampler(self, epoch: int, embed_train: EmbedTrain, row: dict[str, Any]) -> Any:
        from smartmine.smart.graph_batches import GraphPKBatchSampler, neighbour_confusion

        if epoch <= self.warmup_epochs:
            return super()._make_sampler(epoch, embed_train, row)
        t = time.perf_counter()
        emb = embed_train(None)
        row["embed_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        self.confusion = neighbour_confusion(emb, self.labels, self.num_classes, self.index_factory, self.k)
        row["mining_seconds"] = row["embed_seconds"] + time.perf_counter() - t
        return GraphPKBatchSampler(
            self.labels, self.classes_per_batch, self.samples_per_class, self.confusion, seed=self.seed,
            num_replicas=self.num_replicas, rank=self.rank,
        )  # fmt: skip
