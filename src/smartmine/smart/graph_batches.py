"""Graph-composed P×K batches (our addition): classes of a batch drawn from each other's neighbourhoods.

The neighbour lists that smart mining computes also say which classes the current embedding confuses: the count
``confusion[c, d]`` of class-``d`` points among the ``k`` nearest neighbours of class-``c`` points. Composing each
P×K batch from mutually confused classes lets any in-batch loss (margin + distance-weighted included) see hard
negatives at every step, where random P×K batches rarely hold two confusable classes once there are many classes.

Epoch construction (deterministic in ``(seed, epoch)``):

1. every eligible class (two or more images) is shuffled and cut into chunks of ``K`` (the last chunk padded with other
   images of the class; a class with fewer than ``K`` images repeats some), so every image is visited at least once;
2. each batch takes a seed class at random, weighted by its number of remaining chunks (so that large classes do not
   pile up at the end), then adds classes one at a time with probability proportional to their symmetrised
   confusion counts with the classes already chosen, among the classes that still have chunks; when those weights
   are all zero the draw falls back to a uniform choice among the classes with chunks;
3. when fewer than ``P`` classes have chunks left (end of the epoch) the batch is completed with fresh random chunks of
   further classes, still drawn by confusion, so every batch has exactly ``P`` distinct classes;
4. extra batches (built the same way from fresh chunks) make the count divisible by ``num_replicas``; rank ``r``
   takes batches ``r, r + R, …``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from smartmine._validation import ArrayLike, as_numpy, check_labels, check_positive_int
from smartmine.data.samplers import pk_setup
from smartmine.index.base import NeighbourIndex
from smartmine.smart.miner import default_k


def class_confusion(neighbour_indices: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Count other-class neighbours per class pair.

    Args:
        neighbour_indices: ``(N, k)`` int neighbour lists (``-1`` padding ignored).
        labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``C``.

    Returns:
        ``(C, C)`` int64 matrix: entry ``[c, d]`` (``c != d``) is the number of (point of class c, neighbour of class
        d) pairs; the diagonal is 0. Not symmetric in general.
    """
    nbr = as_numpy(neighbour_indices)
    if nbr.ndim != 2 or not np.issubdtype(nbr.dtype, np.integer):
        raise ValueError(f"neighbour_indices: expected a 2-D integer (N, k) array, got {nbr.dtype} {nbr.shape}")
    num_classes = check_positive_int(num_classes, "num_classes")
    y = check_labels(labels, nbr.shape[0]).cpu().numpy()
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels: must lie in [0, num_classes={num_classes}), got [{y.min()}, {y.max()}]")
    n = nbr.shape[0]
    if nbr.size and (nbr.min() < -1 or nbr.max() >= n):
        raise ValueError(f"neighbour_indices: entries must lie in [-1, {n}), got [{nbr.min()}, {nbr.max()}]")
    valid = nbr >= 0
    src = np.broadcast_to(y[:, None], nbr.shape)[valid]
    dst = y[nbr[valid]]
    other = src != dst
    flat = src[other].astype(np.int64) * num_classes + dst[other]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def neighbour_confusion(
    embeddings: ArrayLike,
    labels: ArrayLike,
    num_classes: int,
    index_factory: Callable[[], NeighbourIndex],
    k: int | None = None,
) -> np.ndarray:
    """:func:`class_confusion` of the ``k`` nearest neighbours of every training point.

    Args:
        embeddings: ``(N, D)`` embeddings of the whole training set.
        labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``C``.
        index_factory: zero-argument callable returning a fresh neighbour index (built here, once).
        k: neighbours per point (default ``None``: smart mining's :func:`~smartmine.smart.miner.default_k`); capped
            at ``N − 1``.

    Returns:
        ``(C, C)`` int64 confusion counts, as :func:`class_confusion`.
    """
    y = check_labels(labels).cpu().numpy()
    k = default_k(y) if k is None else min(check_positive_int(k, "k"), y.shape[0] - 1)
    index = index_factory()
    index.build(embeddings)
    _, nbr = index.neighbours(k)
    return class_confusion(nbr, y, num_classes)


class GraphPKBatchSampler(Sampler[list[int]]):
    """P×K batches whose classes are drawn from each other's k-NN neighbourhoods (see the module docstring).

    Args:
        labels: ``(N,)`` integer labels in dataset order.
        classes_per_batch: P (>= 2).
        samples_per_class: K (>= 2).
        confusion: ``(C, C)`` non-negative class-confusion counts indexed by the *sorted distinct label values*
            (for labels ``0..C−1``, exactly :func:`class_confusion`'s output); symmetrised internally. ``C`` may also
            be larger than the number of distinct labels when labels are ``0..C−1`` with some classes absent.
        seed: base seed (default 0).
        num_replicas, rank: distributed sharding (defaults 1, 0).

    Use as ``DataLoader(dataset, batch_sampler=sampler)``; call :meth:`set_epoch` every epoch and
    :meth:`set_confusion` whenever new neighbour lists are available.
    """

    def __init__(
        self,
        labels: ArrayLike | Sequence[int],
        classes_per_batch: int,
        samples_per_class: int,
        confusion: ArrayLike,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        setup = pk_setup(labels, classes_per_batch, samples_per_class, seed, num_replicas, rank)
        self.classes_per_batch, self.samples_per_class = setup.classes_per_batch, setup.samples_per_class
        self.seed, self.num_replicas, self.rank = setup.seed, setup.num_replicas, setup.rank
        self._classes = setup.classes
        self.eligible_classes: list[int] = [int(c) for c in setup.classes[setup.eligible]]
        self.excluded_classes: list[int] = [int(c) for c in setup.classes[~setup.eligible]]
        self._eligible_pos = np.nonzero(setup.eligible)[0]  # positions in `classes` (rows of the confusion matrix)
        self._members = [setup.members[i] for i in self._eligible_pos]
        self.batch_size = self.classes_per_batch * self.samples_per_class
        self._weights = np.zeros((0, 0))
        self.set_confusion(confusion)
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_confusion(self, confusion: ArrayLike) -> None:
        """Replace the class-confusion counts (shape ``(C, C)``, see the class docstring)."""
        conf = as_numpy(confusion, dtype=np.float64)
        if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
            raise ValueError(f"confusion: expected a square (C, C) matrix, got shape {conf.shape}")
        if not np.isfinite(conf).all() or (conf < 0).any():
            raise ValueError("confusion: entries must be finite and non-negative")
        c = conf.shape[0]
        if c == self._classes.size:
            rows = self._eligible_pos
        elif self._classes.size and self._classes.min() >= 0 and self._classes.max() < c:
            rows = self._classes[self._eligible_pos]  # labels are 0..C-1 with some classes absent
        else:
            raise ValueError(
                f"confusion: size {c} matches neither the {self._classes.size} distinct labels nor labels in [0, {c})"
            )
        sym = conf + conf.T
        w = sym[np.ix_(rows, rows)]
        np.fill_diagonal(w, 0.0)
        self._weights = w  # (E, E) over eligible classes
        self._cache = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields (deterministic in ``(seed, epoch)``)."""
        self.epoch = check_positive_int(epoch, "epoch", minimum=0)

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch."""
        return len(self.global_batches()) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.num_replicas]

    def batch_classes(self, batch: list[int]) -> list[int]:
        """The class labels of a batch, one per block of ``K`` (helper for inspection and tests)."""
        k = self.samples_per_class
        lookup = {int(i): int(c) for c, m in zip(self.eligible_classes, self._members, strict=True) for i in m}
        return [lookup[int(batch[j])] for j in range(0, len(batch), k)]

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch across every rank (default: the current epoch), each ``K`` indices per class."""
        epoch = self.epoch if epoch is None else check_positive_int(epoch, "epoch", minimum=0)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        p, k = self.classes_per_batch, self.samples_per_class
        n_cls = len(self._members)

        chunks: list[list[np.ndarray]] = []
        for m in self._members:
            perm = rng.permutation(m)
            cut = [perm[i : i + k] for i in range(0, perm.size, k)]
            if cut[-1].size < k:
                short = cut[-1]
                pool = perm[: perm.size - short.size] if perm.size - short.size >= k - short.size else perm
                pad = rng.choice(pool, size=k - short.size, replace=pool.size < k - short.size)
                cut[-1] = np.concatenate([short, pad])
            chunks.append(cut[::-1])  # pop() from the end takes them in shuffled order
        remaining = np.array([len(c) for c in chunks], dtype=np.int64)

        batches: list[list[int]] = []
        while remaining.sum() > 0 or len(batches) % self.num_replicas:
            chosen = self._compose(rng, remaining, p, n_cls)
            batch: list[int] = []
            for c in chosen:
                if remaining[c] > 0:
                    chunk = chunks[c].pop()
                    remaining[c] -= 1
                else:
                    m = self._members[c]
                    chunk = rng.choice(m, size=k, replace=m.size < k)
                batch.extend(int(i) for i in chunk)
            batches.append(batch)
        self._cache = (epoch, batches)
        return batches

    def _compose(self, rng: np.random.Generator, remaining: np.ndarray, p: int, n_cls: int) -> list[int]:
        """Pick ``p`` distinct class positions: a seed class, then classes ∝ confusion with those already chosen."""
        has = remaining > 0
        taken = np.zeros(n_cls, bool)
        if has.any():
            seed_cls = int(rng.choice(n_cls, p=remaining / remaining.sum()))
        else:
            seed_cls = int(rng.integers(n_cls))
        chosen = [seed_cls]
        taken[seed_cls] = True
        affinity = self._weights[seed_cls].copy()
        for _ in range(p - 1):
            # Classes with chunks left come first, so the epoch ends once every chunk is used.
            pool = has & ~taken
            if not pool.any():
                pool = ~taken
            w = np.where(pool, affinity, 0.0)
            total = w.sum()
            if total > 0:
                c = int(rng.choice(n_cls, p=w / total))
            else:
                cand = np.nonzero(pool)[0]
                c = int(cand[rng.integers(cand.size)])
            chosen.append(c)
            taken[c] = True
            affinity += self._weights[c]
        return chosen

    def __repr__(self) -> str:
        return (
            f"GraphPKBatchSampler(classes_per_batch={self.classes_per_batch}, samples_per_class="
            f"{self.samples_per_class}, seed={self.seed}, num_replicas={self.num_replicas}, rank={self.rank}, "
            f"eligible_classes={len(self.eligible_classes)})"
        )
