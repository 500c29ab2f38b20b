"""Exact k-nearest-neighbour search by chunked matrix products in torch (CPU or CUDA).

Squared Euclidean distances are computed as ``‖q‖² + ‖g‖² − 2 q·g`` one block of queries at a time, so peak memory is
one ``(chunk × N)`` float32 block plus the ``(chunk × k)`` results, whatever the number of queries. The chunk is sized
from a byte budget (``DEFAULT_BLOCK_BYTES``), so a 1M-point gallery needs only a few dozen query rows per block.

Ordering is deterministic: ascending by distance, equal distances by ascending gallery index. ``torch.topk`` alone
does not promise which of several equal values it keeps, so rows whose ``k``-th and ``(k+1)``-th values tie (only
duplicates or exactly equidistant points do this) are re-ranked with a stable sort of that row.
"""

from __future__ import annotations

import numpy as np
import torch

from smartmine._validation import ArrayLike, check_embeddings, check_positive_int
from smartmine.index.base import NeighbourIndex

DEFAULT_BLOCK_BYTES = 256 * 2**20
"""Byte budget of one ``(chunk × N)`` distance block plus its top-k temporaries (256 MiB)."""


def resolve_device(device: torch.device | str | None, like: torch.Tensor | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means the device of ``like`` (CPU when ``like`` is not given)."""
    if device is None:
        return like.device if like is not None else torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot interpret {device!r} as a torch device ({exc})") from exc


def auto_chunk_size(n_gallery: int, k: int, budget_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Number of query rows per block so that one block of ``n_gallery`` float32 distances and its top-``k``
    results (values, int64 indices) stay within ``budget_bytes``; at least 1."""
    per_row = 4 * n_gallery + 12 * (k + 1)
    return max(1, int(budget_bytes // per_row))


def _stable_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest ``k`` values of each row of ``block`` (shape ``(B, N)``), ties broken by ascending column index."""
    n = block.shape[1]
    kk = min(k + 1, n)
    vals, idx = torch.topk(block, kk, dim=1, largest=False, sorted=True)
    if kk > k:
        # Only a tie across the k-th/(k+1)-th boundary makes topk's choice of columns ambiguous.
        ambiguous = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k], idx[:, :k]
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero().flatten()
            sv, si = torch.sort(block[rows], dim=1, stable=True)
            vals = vals.clone()
            idx = idx.clone()
            vals[rows], idx[rows] = sv[:, :k], si[:, :k]
    # Within the kept k, order equal values by index: sort by index, then stable-sort by value.
    order = torch.argsort(idx, dim=1)
    idx = torch.gather(idx, 1, order)
    vals = torch.gather(vals, 1, order)
    order = torch.sort(vals, dim=1, stable=True).indices
    return torch.gather(vals, 1, order), torch.gather(idx, 1, order)


def iter_exact_knn(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
):
    """Yield ``(start, sq_dist, idx)`` per query chunk, tensors on the compute device; see :func:`exact_knn`.

    Inputs must already be validated 2-D float tensors. Used by :func:`exact_knn` and by the retrieval metrics,
    which consume each chunk's neighbours and discard them, so that no ``(Q × k)`` result is ever materialised.
    """
    dev = resolve_device(device, gallery)
    # float64 stays float64 (used by exact tests); everything else is computed in float32.
    dtype = torch.float64 if gallery.dtype == torch.float64 and queries.dtype == torch.float64 else torch.float32
    g = gallery.detach().to(device=dev, dtype=dtype)
    g_sq = (g * g).sum(dim=1)
    n_q, n_g = queries.shape[0], g.shape[0]
    step = chunk_size if chunk_size is not None else auto_chunk_size(n_g, k, block_bytes)
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        q = queries[start:stop].detach().to(device=dev, dtype=dtype)
        # ‖g‖² − 2 q·g ranks like the squared distance; ‖q‖² is added to the k survivors only.
        block = torch.addmm(g_sq.unsqueeze(0), q, g.T, beta=1.0, alpha=-2.0)
        if exclude_self:
            rows = torch.arange(stop - start, device=dev)
            block[rows, rows + start] = float("inf")
        vals, idx = _stable_topk(block, k)
        del block
        q_sq = (q * q).sum(dim=1, keepdim=True)
        yield start, (vals + q_sq).clamp_min_(0.0).to(torch.float32), idx


def exact_knn(
    queries: ArrayLike,
    gallery: ArrayLike,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``k`` nearest gallery rows of every query, by squared Euclidean distance.

    Args:
        queries: ``(Q, D)`` finite float matrix (NumPy array or tensor).
        gallery: ``(N, D)`` finite float matrix.
        k: neighbours per query; ``1 <= k <= N`` (``k <= N - 1`` with ``exclude_self``).
        exclude_self: the queries *are* the gallery (``Q == N``, row ``i`` is query ``i``): drop each query's own row
            by index. Duplicates of a query (distance 0, other index) are kept.
        chunk_size: query rows per block; default: as many as fit a 256 MiB block (:func:`auto_chunk_size`).
        device: where to compute (``"cpu"``, ``"cuda"``, ...); default: the gallery's device.

    Returns:
        ``(sq_dist, idx)``: ``float32`` and ``int64`` tensors of shape ``(Q, k)`` on ``device``, ascending by distance,
        equal distances by ascending index. Distances are clamped at 0 (round-off of the matrix-product formula).
    """
    g = check_embeddings(gallery, "gallery", min_rows=1)
    q = check_embeddings(queries, "queries")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries: dimension {q.shape[1]} does not match the gallery dimension {g.shape[1]}")
    k = check_positive_int(k, "k")
    n = g.shape[0]
    if exclude_self:
        if q.shape[0] != n:
            raise ValueError(f"queries: exclude_self needs the queries to be the gallery, got {q.shape[0]} vs {n} rows")
        if k > n - 1:
            raise ValueError(f"k: asked for {k} neighbours but each of the {n} points has only {n - 1} others")
    elif k > n:
        raise ValueError(f"k: asked for {k} neighbours but the gallery holds only {n} points")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    dev = resolve_device(device, g)
    out_d = torch.empty((q.shape[0], k), dtype=torch.float32, device=dev)
    out_i = torch.empty((q.shape[0], k), dtype=torch.long, device=dev)
    for start, d, i in iter_exact_knn(q, g, k, exclude_self=exclude_self, chunk_size=chunk_size, device=dev):
        out_d[start : start + d.shape[0]] = d
        out_i[start : start + d.shape[0]] = i
    return out_d, out_i


class ExactIndex(NeighbourIndex):
    """Brute-force index: exact k-NN by chunked matrix products (:func:`exact_knn`) on CPU or CUDA.

    Args:
        device: where the indexed points live and distances are computed; default: CPU.
        chunk_size: query rows per distance block; default: sized from a 256 MiB budget, so memory stays bounded
            for 1M points.

    ``search`` and ``neighbours`` return NumPy ``float32`` squared distances and ``int64`` indices, ascending, ties by
    index (the :class:`~smartmine.index.base.NeighbourIndex` contract).
    """

    def __init__(self, device: torch.device | str | None = None, chunk_size: int | None = None) -> None:
        super().__init__()
        self.device = resolve_device(device)
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        self._x: torch.Tensor | None = None

    def _build(self, x: torch.Tensor) -> None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        self._x = x.detach().to(device=self.device, dtype=dtype).contiguous()

    def _run(self, queries: torch.Tensor, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        assert self._x is not None
        d, i = exact_knn(queries, self._x, k, exclude_self=exclude_self, chunk_size=self.chunk_size, device=self.device)
        return d.cpu().numpy(), i.cpu().numpy()

    def _search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._run(queries, k, exclude_self=False)

    def _neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._x is not None
        return self._run(self._x, k, exclude_self=True)
