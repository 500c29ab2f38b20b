"""Embedding passes: run a model over (part of) a dataset in inference mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm


@torch.no_grad()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
    amp: bool = False,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> torch.Tensor:
    """Embeddings of ``dataset`` (or of its rows ``indices``), shape ``(N, D)``, float32 on the CPU, in order.

    ``batch_transform`` (if given) is applied to every batch on the device before the model. The model is put in
    eval mode for the pass and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    subset = dataset if indices is None else Subset(dataset, list(map(int, indices)))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks = []
    use_amp = amp and device.type == "cuda"
    try:
        for images, _labels, _idx in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            if batch_transform is not None:
                images = batch_transform(images)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(images)
            chunks.append(out.float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return torch.empty((0, 0))
    return torch.cat(chunks)
