"""``model.head_init``: the embedding head's starting value, fitted on the training images before the first step.

Shared by the trainer and the peer baselines of ``benchmarks/peers.py``, so that a comparison starts every method from
the same head.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from smartmine.models.head_init import PcaHead, init_head_from_pca_
from smartmine.training.config import RunConfig
from smartmine.training.distributed import DistInfo, gather_rows
from smartmine.training.embedding import embed_dataset
from smartmine.training.errors import TrainingError


class BackboneFeatures(torch.nn.Module):
    """``model.features`` as a module: an embedding pass over the backbone alone, ``(B, C, H, W)`` → ``(B, F)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def init_head(
    cfg: RunConfig,
    model: torch.nn.Module,
    data,
    device: torch.device,
    dist: DistInfo | None = None,
    *,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> PcaHead | None:
    """Apply ``cfg.model.head_init`` to ``model`` (an :class:`~smartmine.models.embedder.Embedder` on ``device``).

    ``random``: nothing to do (``None``). ``pca``: the head becomes the top principal directions of the backbone
    features of up to ``cfg.model.head_init_images`` training images (``data.train_eval``, test-time transforms; a
    subset seeded by ``cfg.seed`` when there are more). Under torch.distributed every rank embeds a strided shard and
    all exchange them, so every rank computes the same head. Raises :class:`TrainingError` naming the key when the
    features cannot give a head (too few images, NaN features, an embedding wider than the features).
    """
    if cfg.model.head_init == "random":
        return None
    dist = dist or DistInfo()
    n, cap = len(data.train_eval), cfg.model.head_init_images
    rows = np.arange(n)
    if n > cap:
        rows = np.sort(np.random.default_rng([cfg.seed, 0, 3]).choice(n, size=cap, replace=False))
    local = torch.arange(dist.rank, rows.size, dist.world_size)
    features = embed_dataset(
        BackboneFeatures(model), data.train_eval, device=device, batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers, indices=rows[local.numpy()], amp=cfg.train.amp,
        batch_transform=data.eval_batch_transform, progress=progress, desc="features for the PCA head",
    )  # fmt: skip
    features = gather_rows(features, local, rows.size, dist)
    try:
        init = init_head_from_pca_(model, features)
    except ValueError as exc:
        raise TrainingError(f"model.head_init=pca: {exc}") from None
    if dist.is_main:
        log(
            f"head initialised by PCA: the top {model.head.out_features} principal directions of {rows.size:,} "
            f"training images' backbone features ({100 * init.explained:.1f} % of their variance)"
        )
    return init
