"""Class-balanced P×K batch sampling that visits every image once per epoch.

A P×K batch holds ``P`` distinct classes with ``K`` images each, so every in-batch miner finds positives and
negatives in every batch. Unlike samplers that draw ``K`` images of random classes until a fixed length is reached
(and so skip images at random), :class:`PKBatchSampler` defines an epoch as a pass over the data:

1. per eligible class, shuffle its images and cut them into chunks of ``K``; the last, short chunk is padded with
   other images of the same class (drawn from those not already in the chunk);
2. when the chunks don't fill the batches exactly (or a class has more chunks than there are batches, or the
   batches must split evenly over ``num_replicas``), add extra chunks of random classes, so a few images appear
   twice in an epoch, but none is left out;
3. draw each batch's ``P`` distinct classes at random, weighted by their remaining chunks, and take one chunk of
   each; with ``num_replicas > 1`` rank ``r`` takes batches ``r, r + R, r + 2R, …`` of this common plan.

A class with a single image cannot give a positive pair: such classes are excluded (see ``excluded_classes``).
A class with fewer than ``K`` images cycles through its images to fill its chunk (every image, fewest repeats).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from smartmine._validation import ArrayLike, check_labels, check_positive_int


@dataclass(frozen=True)
class PKSetup:
    """Validated P×K parameters and the class grouping every P×K sampler starts from."""

    classes_per_batch: int
    samples_per_class: int
    seed: int
    num_replicas: int
    rank: int
    classes: np.ndarray
    """All class ids, ascending."""
    members: list[np.ndarray]
    """Dataset indices of each class of ``classes``, ascending."""
    eligible: np.ndarray
    """Boolean per class of ``classes``: two or more images (a single image gives no positive pair)."""


def pk_setup(
    labels: ArrayLike | Sequence[int],
    classes_per_batch: int,
    samples_per_class: int,
    seed: int,
    num_replicas: int,
    rank: int,
) -> PKSetup:
    """Validate P×K sampler arguments (``ValueError`` naming the parameter) and group the indices by class."""
    y = check_labels(labels).cpu().numpy()
    p = check_positive_int(classes_per_batch, "classes_per_batch", minimum=2)
    k = check_positive_int(samples_per_class, "samples_per_class", minimum=2)
    seed = check_positive_int(seed, "seed", minimum=0)
    replicas = check_positive_int(num_replicas, "num_replicas")
    rank = check_positive_int(rank, "rank", minimum=0)
    if rank >= replicas:
        raise ValueError(f"rank: expected a value in [0, num_replicas={replicas}), got {rank}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(counts)[:-1]) if len(y) else []
    eligible = counts >= 2
    if int(eligible.sum()) < p:
        raise ValueError(
            f"classes_per_batch: {p} classes per batch need at least that many classes with two or more images, "
            f"but the labels have {int(eligible.sum())} such class(es) ({int((~eligible).sum())} single-image "
            "class(es) excluded)"
        )
    return PKSetup(p, k, seed, replicas, rank, classes, members, eligible)


class PKBatchSampler(Sampler[list[int]]):
    """Batches of ``classes_per_batch`` (P) classes × ``samples_per_class`` (K) dataset indices.

    Use as ``DataLoader(dataset, batch_sampler=PKBatchSampler(labels, P, K))`` and call :meth:`set_epoch` at the
    start of every epoch (as with ``DistributedSampler``): the batches of an epoch depend only on
    ``(seed, epoch)``, so every rank computes the same global plan and takes its own share.

    Args:
        labels: ``(N,)`` integer class label of every dataset item, in dataset order.
        classes_per_batch: P, distinct classes per batch (>= 2, so that negatives exist).
        samples_per_class: K, indices per class in a batch (>= 2, so that positives exist).
        seed: base seed of the epoch permutations (default 0).
        num_replicas: number of distributed ranks sharing the epoch (default 1).
        rank: this process's rank in ``[0, num_replicas)`` (default 0).

    Attributes:
        eligible_classes: sorted class labels with at least two images (the classes sampled).
        excluded_classes: sorted class labels with a single image (never sampled).
        batch_size: ``P * K``.

    Raises:
        ValueError: bad labels, ``classes_per_batch`` or ``samples_per_class`` below 2, fewer than P eligible
            classes, or an invalid ``seed``/``num_replicas``/``rank``.
    """

    def __init__(
        self,
        labels: ArrayLike | Sequence[int],
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        setup = pk_setup(labels, classes_per_batch, samples_per_class, seed, num_replicas, rank)
        self.classes_per_batch, self.samples_per_class = setup.classes_per_batch, setup.samples_per_class
        self.seed, self.num_replicas, self.rank = setup.seed, setup.num_replicas, setup.rank
        self.eligible_classes: list[int] = [int(c) for c in setup.classes[setup.eligible]]
        self.excluded_classes: list[int] = [int(c) for c in setup.classes[~setup.eligible]]
        # Dataset indices of each eligible class, ascending (the epoch shuffles them).
        self._members: list[np.ndarray] = [m for m, ok in zip(setup.members, setup.eligible, strict=True) if ok]
        self.batch_size = self.classes_per_batch * self.samples_per_class
        k = self.samples_per_class
        self._chunks_per_class = np.array([-(-len(m) // k) for m in self._members], dtype=np.int64)
        self._num_batches = self._global_num_batches()
        self.epoch = 0

    def _global_num_batches(self) -> int:
        # Enough batches to hold every chunk, at least as many as the largest class has chunks (its chunks must go
        # to distinct batches), rounded up so the ranks get equal shares. Feasible because P <= #eligible classes.
        total = int(self._chunks_per_class.sum())
        nb = max(-(-total // self.classes_per_batch), int(self._chunks_per_class.max()))
        return -(-nb // self.num_replicas) * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields (deterministic in ``(seed, epoch)``)."""
        self.epoch = check_positive_int(epoch, "epoch", minimum=0)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return self._num_batches // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.num_replicas]

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch across every rank, in order (default: the current epoch).

        Each batch lists ``K`` indices of its first class, then ``K`` of the second, and so on.
        """
        epoch = self.epoch if epoch is None else check_positive_int(epoch, "epoch", minimum=0)
        rng = np.random.default_rng([self.seed, epoch])
        p, k, nb = self.classes_per_batch, self.samples_per_class, self._num_batches

        # 1. Chunks of K per class: a shuffled pass over the class, the last chunk padded from the same class.
        chunks: list[list[np.ndarray]] = []
        for members in self._members:
            perm = rng.permutation(members)
            cut = [perm[i : i + k] for i in range(0, len(perm), k)]
            if len(cut[-1]) < k:
                cut[-1] = np.concatenate([cut[-1], self._pad(rng, perm, cut[-1], k - len(cut[-1]))])
            chunks.append(cut)

        # 2. Extra chunks fill the remaining slots, from classes that still have room (< nb chunks each).
        spare = nb * p - int(self._chunks_per_class.sum())
        while spare > 0:
            room = [c for c in rng.permutation(len(chunks)) if len(chunks[c]) < nb]
            for c in room[:spare]:
                chunks[c].append(self._extra_chunk(rng, self._members[c], k))
            spare -= min(spare, len(room))

        # 3. Draw each batch's P classes at random, weighted by their remaining chunks. A class with as many chunks
        # left as batches left ("tight") must be taken now, or it would need two chunks in one batch later; at most P
        # classes are tight because the remaining chunks fill the remaining batches exactly, and at least P classes
        # have chunks left because none has more than one per remaining batch, so every draw is feasible.
        remaining = np.array([len(c) for c in chunks], dtype=np.int64)
        used = np.zeros_like(remaining)
        batches: list[list[int]] = []
        for b in range(nb):
            left = nb - b
            tight = np.flatnonzero(remaining == left)
            free = np.flatnonzero((remaining > 0) & (remaining < left))
            weights = remaining[free] / remaining[free].sum() if free.size else None
            picked = rng.choice(free, size=p - tight.size, replace=False, p=weights) if p > tight.size else []
            chosen = rng.permutation(np.concatenate([tight, np.asarray(picked, dtype=np.int64)]))
            batch: list[int] = []
            for c in chosen:
                batch.extend(int(i) for i in chunks[c][used[c]])
                used[c] += 1
                remaining[c] -= 1
            batches.append(batch)
        return batches

    @staticmethod
    def _pad(rng: np.random.Generator, perm: np.ndarray, chunk: np.ndarray, missing: int) -> np.ndarray:
        """``missing`` further images of the chunk's class, none already in the chunk when the class has enough."""
        others = perm[: len(perm) - len(chunk)]  # the last chunk is the tail of the permutation
        if len(others) >= missing:
            return rng.choice(others, size=missing, replace=False)
        return np.resize(perm, len(perm) + missing)[len(perm) :]  # class smaller than K: cycle through it

    @staticmethod
    def _extra_chunk(rng: np.random.Generator, members: np.ndarray, k: int) -> np.ndarray:
        """K random images of one class, distinct when it has K, else every image with the fewest repeats."""
        if len(members) >= k:
            return rng.choice(members, size=k, replace=False)
        return np.resize(rng.permutation(members), k)

    def __repr__(self) -> str:
        return (
            f"PKBatchSampler(classes_per_batch={self.classes_per_batch}, samples_per_class={self.samples_per_class}, "
            f"seed={self.seed}, num_replicas={self.num_replicas}, rank={self.rank}, "
            f"eligible_classes={len(self.eligible_classes)}, excluded_classes={len(self.excluded_classes)})"
        )


__all__ = ["PKBatchSampler"]
