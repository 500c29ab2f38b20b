"""Where and how reproducibly a run executes: the training device, and per-epoch seeding (every epoch's randomness
depends only on ``(seed, epoch)``, which makes resume exact)."""

from __future__ import annotations

import random

import numpy as np
import torch

from smartmine.training.errors import TrainingError


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code draws from the legacy global RNG
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every epoch of a run, in ``[0, 2**31 − 1)``."""
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def train_device(name: str) -> torch.device:
    """``train.device`` as a device: ``auto`` is CUDA when available, else the CPU; CUDA must exist when named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device: '{name}' was requested but CUDA is not available")
    return device
