"""Dataset-wide smart mining [SM]: Algorithm 1 triplet selection, the adaptive κ controller, the epoch-level miner,
its triplet plan and embedding cache, and graph-composed P×K batches."""

from smartmine.smart.controller import AdaptiveKappa, KappaRecord, SteeredKappa, SteerRecord, training_error
from smartmine.smart.graph_batches import GraphPKBatchSampler, class_confusion
from smartmine.smart.holdout import HoldoutGuard
from smartmine.smart.miner import EmbeddingCache, SmartMiner, default_k
from smartmine.smart.plan import TripletBatch, TripletPlan, build_epoch_plan, random_triplets
from smartmine.smart.selection import SelectionResult, select_triplets
from smartmine.smart.thresholds import KappaThresholds, kappa_for_share, kappa_thresholds

__all__ = [
    "AdaptiveKappa",
    "EmbeddingCache",
    "GraphPKBatchSampler",
    "HoldoutGuard",
    "KappaThresholds",
    "KappaRecord",
    "SelectionResult",
    "SmartMiner",
    "SteerRecord",
    "SteeredKappa",
    "TripletBatch",
    "TripletPlan",
    "build_epoch_plan",
    "class_confusion",
    "default_k",
    "kappa_for_share",
    "kappa_thresholds",
    "random_triplets",
    "select_triplets",
    "training_error",
]
