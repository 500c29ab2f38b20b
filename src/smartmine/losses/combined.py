"""A weighted sum of losses that share the ``loss(embeddings, labels, triplets)`` call, e.g. "Triplet + Global".

ALGORITHMS.md §1 fixes the Smart Mining objective as ``mean_i J_t(i) + w_g · J_g`` with ``w_g = 1``::

    WeightedSumLoss({"triplet": (RatioTripletLoss(), 1.0), "global": (GlobalLoss(), 1.0)})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from smartmine._validation import ArrayLike
from smartmine.losses.base import check_float


class WeightedSumLoss(torch.nn.Module):
    """``Σ_k w_k · loss_k(embeddings, labels, triplets)`` over named member losses.

    Every member sees the same inputs (each validates them). After each call, :attr:`last_terms` holds the detached
    value of every *unweighted* term, for logging and for naming the culprit of a NaN. The members are registered
    sub-modules (their parameters, e.g. a margin loss's β, are in ``parameters()`` and ``state_dict()``).

    Args:
        terms: ``{name: (loss, weight)}`` in the order they are evaluated; at least one entry, names valid as
            ``nn.ModuleDict`` keys (non-empty, no ``"."``), weights finite and ``>= 0``.
        main: the term that answers :meth:`active` (default ``None``: the first).
    """

    def __init__(self, terms: Mapping[str, tuple[torch.nn.Module, float]], main: str | None = None) -> None:
        super().__init__()
        if not isinstance(terms, Mapping) or not terms:
            raise ValueError(f"terms: expected a non-empty mapping name -> (loss, weight), got {terms!r}")
        losses: dict[str, torch.nn.Module] = {}
        weights: dict[str, float] = {}
        for name, entry in terms.items():
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"terms: names must be non-empty strings without '.', got {name!r}")
            if not isinstance(entry, tuple | list) or len(entry) != 2 or not isinstance(entry[0], torch.nn.Module):
                raise ValueError(f"terms[{name!r}]: expected a pair (loss module, weight), got {entry!r}")
            losses[name] = entry[0]
            weights[name] = check_float(entry[1], f"terms[{name!r}].weight", minimum=0.0)
        self.losses = torch.nn.ModuleDict(losses)
        self.weights = weights
        if main is not None and main not in losses:
            raise ValueError(f"main: {main!r} is not one of the terms {list(losses)}")
        self.main = main if main is not None else next(iter(losses))
        self._last: dict[str, torch.Tensor] = {}

    def forward(
        self,
        embeddings: ArrayLike,
        labels: ArrayLike | Sequence[int] | None,
        triplets: Sequence[ArrayLike],
    ) -> torch.Tensor:
        """The weighted total, a scalar (float64 for float64 embeddings, float32 otherwise)."""
        total: torch.Tensor | None = None
        last: dict[str, torch.Tensor] = {}
        for name, loss in self.losses.items():
            value = loss(embeddings, labels, triplets)
            last[name] = value.detach()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        self._last = last
        assert total is not None  # the constructor guarantees at least one term
        return total

    def active(
        self,
        embeddings: ArrayLike,
        labels: ArrayLike | Sequence[int] | None,
        triplets: Sequence[ArrayLike],
    ) -> torch.Tensor:
        """``(T,)`` bool: the main term's :meth:`~smartmine.losses.base.BaseLoss.active` (the training error)."""
        return self.losses[self.main].active(embeddings, labels, triplets)

    @property
    def last_values(self) -> dict[str, torch.Tensor]:
        """``{name: value}`` of the unweighted terms of the last call as detached scalar tensors, on their device (no
        synchronisation); empty before the first call."""
        return dict(self._last)

    @property
    def last_terms(self) -> dict[str, float]:
        """``{name: value}`` of the unweighted terms of the last call (empty before the first call).

        Kept as detached tensors and converted here, so a training step pays the device synchronisation only when it
        actually logs.
        """
        return {name: float(v) for name, v in self._last.items()}

    def beta_parameters(self) -> list[torch.nn.Parameter]:
        """The learned β parameters of all members that have them (e.g. a margin loss), for their optimiser group."""
        params: list[torch.nn.Parameter] = []
        for loss in self.losses.values():
            if hasattr(loss, "beta_parameters"):
                params.extend(loss.beta_parameters())
        return params

    def __getitem__(self, name: str) -> torch.nn.Module:
        """The member loss called ``name``."""
        return self.losses[name]

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{k}: {w}" for k, w in self.weights.items())
