"""Chunked exact k-NN for evaluation: the torch path (:mod:`smartmine.index.exact`) or an optional faiss path.

Both yield the neighbours of one block of queries at a time, so a caller can reduce each block to per-query
statistics and drop it: memory stays at one block, never ``(Q × k)`` for all queries at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from smartmine.index.base import drop_self
from smartmine.index.exact import iter_exact_knn

BACKENDS = ("torch", "faiss")
FAISS_DEFAULT_CHUNK = 8192
"""Query rows per faiss search call; faiss tiles the distance computation itself, this only bounds the results."""


def _import_faiss():
    try:
        import faiss  # noqa: PLC0415 - optional dependency, imported only when asked for
    except ImportError as exc:
        raise ImportError(
            "backend='faiss' needs the faiss package: pip install 'smartmine[faiss]' (or faiss-cpu / faiss-gpu)"
        ) from exc
    return faiss


def iter_knn(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool,
    backend: str = "torch",
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(start, sq_dist (B, k), idx (B, k))`` for consecutive blocks of validated query rows.

    ``backend="torch"``: exact chunked matrix products on ``device``, ties broken by index.
    ``backend="faiss"``: ``faiss.IndexFlatL2`` on the CPU (exact; order among exactly equal distances is faiss's);
    with ``exclude_self`` it searches ``k + 1`` and removes each query's own row (or the farthest one if duplicates
    pushed it out). Tensors of the faiss path are returned on the CPU.
    """
    if backend == "torch":
        yield from iter_exact_knn(queries, gallery, k, exclude_self=exclude_self, chunk_size=chunk_size, device=device)
        return
    if backend != "faiss":
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    faiss = _import_faiss()
    g = np.ascontiguousarray(gallery.detach().cpu().numpy(), dtype=np.float32)
    index = faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    kk = k + 1 if exclude_self else k
    step = chunk_size if chunk_size is not None else FAISS_DEFAULT_CHUNK
    for start in range(0, queries.shape[0], step):
        q = np.ascontiguousarray(queries[start : start + step].detach().cpu().numpy(), dtype=np.float32)
        d, i = index.search(q, kk)
        if exclude_self:
            # drop_self matches row r against index r, so shift the indices into the block's frame and back.
            d, i = drop_self(d, i - start, k)
            i = i + start
        yield start, torch.from_numpy(np.maximum(d, 0.0)), torch.from_numpy(i.astype(np.int64))
