"""How good the neighbour lists of an approximate index are: recall against exact search on a small sample.

Mining from lists that miss true neighbours picks negatives that are not the nearest ones (with a FANNG budget too
small for ``k``, 1.7 % of strict triplets had ``D(a,n) >= D(a,p)``), so every mined epoch measures its lists.
"""

from __future__ import annotations

import numpy as np
import torch

from smartmine._validation import ArrayLike, as_numpy, check_positive_int


def neighbour_list_recall(
    embeddings: ArrayLike,
    neighbour_indices: ArrayLike,
    rng: np.random.Generator,
    sample_size: int = 256,
) -> float:
    """Mean recall@k of the lists of ``sample_size`` random points against exact (brute-force) search.

    Args:
        embeddings: ``(N, D)`` the points the lists were built on.
        neighbour_indices: ``(N, k)`` int lists (``-1`` padding counts as a miss), the point itself excluded.
        rng: picks the sample.
        sample_size: points checked (default 256; all when ``N`` is smaller).

    Returns:
        The mean over the sample of ``|list ∩ exact k-NN| / k``, in [0, 1] (1.0 when ``k = 0``).
    """
    x = torch.as_tensor(as_numpy(embeddings)).float()
    idx = as_numpy(neighbour_indices)
    n, k = idx.shape
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"embeddings: expected {n} rows matching the lists, got shape {tuple(x.shape)}")
    sample_size = check_positive_int(sample_size, "sample_size")
    if k == 0 or n < 2:
        return 1.0
    k = min(k, n - 1)
    rows = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
    q = x[torch.from_numpy(rows)]
    d2 = (q * q).sum(1, keepdim=True) - 2.0 * q @ x.T + (x * x).sum(1)[None, :]
    d2[torch.arange(rows.size), torch.from_numpy(rows)] = float("inf")  # the point itself is not its neighbour
    exact = torch.topk(d2, k, dim=1, largest=False).indices.numpy()
    hits = 0
    for r, row in enumerate(rows):
        listed = idx[row, :k]
        hits += np.intersect1d(listed[listed >= 0], exact[r]).size
    return hits / (rows.size * k)
