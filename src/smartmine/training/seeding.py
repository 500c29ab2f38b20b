"""Per-epoch seeding: every epoch's randomness depends only on ``(seed, epoch)``, which makes resume exact."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code draws from the legacy global RNG
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every epoch of a run, in ``[0, 2**31 − 1)``."""
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)
