"""Common machinery of the in-batch miners: validation, no-grad execution, seeding and the triplet cap.

Every miner is called as ``miner(embeddings, labels) -> (a, p, n)`` on one mini-batch (normally a P×K class-balanced
batch, see :class:`smartmine.data.samplers.PKBatchSampler`). Subclasses implement :meth:`InBatchMiner._mine` on
validated inputs; this base class guarantees the shared contract:

* inputs are validated with :mod:`smartmine._validation` (``ValueError`` naming the argument on bad input);
* mining runs under ``torch.no_grad()`` on detached embeddings: miners choose indices, they never carry gradients;
* an empty batch, a batch with a single class, or a batch without any positive pair yields empty triplets;
* randomness comes from the miner's own CPU ``torch.Generator`` (seeded by ``seed``), so results are reproducible on
  any device and independent of the global RNG; indices are returned on the embeddings' device;
* an optional ``max_triplets`` cap keeps a uniform random subset (in the original order) when a batch yields more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from smartmine._validation import (
    ArrayLike,
    Triplets,
    check_embeddings,
    check_labels,
    check_positive_int,
    empty_triplets,
)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from OS entropy when ``seed`` is None."""
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer or None, got {seed!r}")
        g.manual_seed(seed)
    return g


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(B, B)`` masks ``(positive, negative)``: same label without the diagonal, and different label."""
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


class InBatchMiner(ABC):
    """Base class of the in-batch miners.

    Args:
        seed: seed of the miner's private CPU generator (None: fresh entropy, not reproducible). Successive calls
            continue the same random stream, so a fixed seed reproduces a whole training run's triplets.
        max_triplets: keep at most this many triplets per batch, a uniform random subset (None: no cap).
    """

    def __init__(self, *, seed: int | None = None, max_triplets: int | None = None) -> None:
        self.seed = seed
        self.generator = make_generator(seed)
        self.max_triplets = None if max_triplets is None else check_positive_int(max_triplets, "max_triplets")

    def __call__(self, embeddings: ArrayLike, labels: ArrayLike) -> Triplets:
        """Mine triplets from one batch.

        Args:
            embeddings: ``(B, D)`` floating-point embeddings (normally L2-normalised), finite.
            labels: ``(B,)`` integer class labels.

        Returns:
            ``(a, p, n)``: three 1-D ``torch.long`` tensors of equal length on the embeddings' device, with
            ``labels[a] == labels[p]``, ``a != p`` and ``labels[n] != labels[a]``.
        """
        x = check_embeddings(embeddings)
        y = check_labels(labels, x.shape[0]).to(x.device)
        device = x.device
        if x.shape[0] < 3:  # a triplet needs two same-class items and one other-class item
            return empty_triplets(device)
        with torch.no_grad():
            pos, neg = label_masks(y)
            if not bool(pos.any()) or not bool(neg.any()):
                return empty_triplets(device)
            a, p, n = self._mine(x.detach(), y, pos, neg)
            a, p, n = self._cap(a.long(), p.long(), n.long())
        return a.to(device), p.to(device), n.to(device)

    @abstractmethod
    def _mine(self, x: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Triplets:
        """Mine from validated, detached ``x: (B, D)`` and ``labels: (B,)`` on the same device.

        ``pos``/``neg`` are the ``(B, B)`` masks of :func:`label_masks`; at least one positive pair and one
        negative pair exist. Returns index tensors (any device; moved to the embeddings' device by the caller).
        """

    def _cap(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> Triplets:
        if self.max_triplets is None or a.numel() <= self.max_triplets:
            return a, p, n
        keep = torch.randperm(a.numel(), generator=self.generator)[: self.max_triplets].sort().values
        keep = keep.to(a.device)
        return a[keep], p[keep], n[keep]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, max_triplets={self.max_triplets})"
