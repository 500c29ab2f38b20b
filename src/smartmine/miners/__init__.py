"""In-batch triplet miners: ``miner(embeddings, labels) -> (a, p, n)`` (ALGORITHMS.md §2)."""

from smartmine.miners.base import InBatchMiner
from smartmine.miners.distance_weighted import DistanceWeightedMiner
from smartmine.miners.hard import HardMiner
from smartmine.miners.random import RandomMiner
from smartmine.miners.semihard import SemiHardMiner

__all__ = ["DistanceWeightedMiner", "HardMiner", "InBatchMiner", "RandomMiner", "SemiHardMiner"]
