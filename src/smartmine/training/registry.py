"""The losses, in-batch miners and neighbour indexes a run config can name, one registry each.

Config validation takes its valid names from here (and datasets and backbones from their own packages' registries),
so registering a factory is all it takes to use it from a YAML config or ``--set``::

    from smartmine.training.registry import LOSSES

    @LOSSES.register("soft_triplet")
    def _soft_triplet(loss: LossConfig, num_classes: int) -> torch.nn.Module:
        return SoftTripletLoss(margin=loss.margin)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from smartmine._registry import Registry, check_kwargs

if TYPE_CHECKING:  # the config module imports this one
    from smartmine.training.config import LossConfig, MiningConfig

LossFactory = Callable[["LossConfig", int], torch.nn.Module]
"""``factory(loss_section, num_classes) -> loss module`` called as ``loss(embeddings, labels, triplets)``."""
MinerFactory = Callable[["MiningConfig", int], Callable[[torch.Tensor, torch.Tensor], Any]]
"""``factory(mining_section, seed) -> miner(embeddings, labels) -> (a, p, n)``."""

LOSSES: Registry[LossFactory] = Registry("loss.name")
MINERS: Registry[MinerFactory] = Registry("mining.strategy")
"""In-batch miners; ``mining.strategy`` also accepts ``smart`` (dataset-wide mining, not a registry entry)."""


@dataclass(frozen=True)
class IndexSpec:
    """A neighbour index kind: ``load()`` returns its class (imported only when needed); ``fixed(seed, device)`` the
    constructor arguments smartmine sets itself (``mining.index_options`` supplies the others)."""

    load: Callable[[], type]
    fixed: Callable[[int, torch.device | str], dict[str, Any]]

    def make(self, options: dict[str, Any], seed: int, device: torch.device | str) -> Any:
        """A fresh index."""
        return self.load()(**self.fixed(seed, device), **options)

    def check(self, options: dict[str, Any], where: str = "mining.index_options") -> None:
        """``ValueError`` naming ``where.<key>`` for an option the constructor does not take or a value it rejects."""
        cls = self.load()
        check_kwargs(cls, options, where, fixed=self.fixed(0, "cpu"))
        try:
            self.make(options, 0, "cpu")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc


INDEXES: Registry[IndexSpec] = Registry("mining.index")


# --------------------------------------------------------------------------------------------------- losses
@LOSSES.register("ratio_triplet")
def _ratio_triplet(lc: LossConfig, num_classes: int) -> torch.nn.Module:
    from smartmine.losses import RatioTripletLoss

    return RatioTripletLoss(margin=lc.margin)


@LOSSES.register("triplet")
def _triplet(lc: LossConfig, num_classes: int) -> torch.nn.Module:
    from smartmine.losses import TripletLoss

    return TripletLoss(margin=lc.margin, squared=lc.squared)


@LOSSES.register("margin")
def _margin(lc: LossConfig, num_classes: int) -> torch.nn.Module:
    from smartmine.losses import MarginLoss

    return MarginLoss(alpha=lc.margin, beta=lc.beta, nu=lc.nu, num_classes=num_classes if lc.beta_per_class else None,
                      learn_beta=lc.learn_beta)


@LOSSES.register("contrastive")
def _contrastive(lc: LossConfig, num_classes: int) -> torch.nn.Module:
    from smartmine.losses import ContrastiveLoss

    return ContrastiveLoss(margin=lc.contrastive_margin, error_margin=lc.margin)


# --------------------------------------------------------------------------------------------------- miners
def _simple_miner(class_name: str) -> MinerFactory:
    def factory(m: MiningConfig, seed: int) -> Any:
        import smartmine.miners

        return getattr(smartmine.miners, class_name)(seed=seed, max_triplets=m.max_triplets)

    return factory


MINERS.register("random", _simple_miner("RandomMiner"))
MINERS.register("semihard", _simple_miner("SemiHardMiner"))
MINERS.register("hard", _simple_miner("HardMiner"))


@MINERS.register("distance_weighted")
def _distance_weighted(m: MiningConfig, seed: int) -> Any:
    from smartmine.miners import DistanceWeightedMiner

    return DistanceWeightedMiner(cutoff=m.cutoff, nonzero_loss_cutoff=m.nonzero_loss_cutoff, seed=seed,
                                 max_triplets=m.max_triplets)


# -------------------------------------------------------------------------------------------------- indexes
def _exact() -> type:
    from smartmine.index.exact import ExactIndex

    return ExactIndex


def _fanng() -> type:
    from smartmine.index.fanng import FanngIndex

    return FanngIndex


def _faiss() -> type:
    from smartmine.index.faiss_index import FaissIndex

    return FaissIndex


# The exact index runs on the training device; FANNG is seeded with the run's seed.
INDEXES.register("exact", IndexSpec(_exact, lambda seed, device: {"device": device}))
INDEXES.register("fanng", IndexSpec(_fanng, lambda seed, device: {"seed": seed}))
INDEXES.register("faiss", IndexSpec(_faiss, lambda seed, device: {}))
