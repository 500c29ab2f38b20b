"""Exact k-nearest-neighbour search by tiled matrix products (CPU or CUDA).

Squared Euclidean distances are computed as ``‖q‖² + ‖g‖² − 2 q·g`` one tile at a time, so peak memory is one tile
plus the ``(rows × k)`` results, whatever the number of points.

On the CPU the ``k`` smallest of every row are kept in a bounded max-heap per query (compiled with numba) that is fed
straight from each ``(tile_rows × tile_cols)`` distance tile while the tile is still in cache: one pass over the
distances, no ``torch.topk`` over a wide block. The heap is keyed by ``(distance, gallery index)``, so equal
distances are ranked by index exactly, without a re-sort. When the queries *are* the gallery (``exclude_self``), the
distance matrix is symmetric: each tile pair ``(I, J)`` with ``I < J`` is computed once and feeds both the heaps of
the rows of ``I`` (along its rows) and those of ``J`` (along its columns), which halves the matrix-product work. That
keeps ``N × k`` heap entries in memory (12 bytes each), so it is used only while they fit the block budget; otherwise
the queries are streamed tile by tile.

On CUDA (or any non-CPU device) a ``(chunk × N)`` block is reduced with ``torch.topk``; ``torch.topk`` alone does not
promise which of several equal values it keeps, so rows whose ``k``-th and ``(k+1)``-th values tie (only duplicates or
exactly equidistant points do this) are re-ranked with a stable sort of that row.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from smartmine._validation import ArrayLike, check_embeddings, check_positive_int
from smartmine.index.base import NeighbourIndex

DEFAULT_BLOCK_BYTES = 256 * 2**20
"""Byte budget of one ``(chunk × N)`` distance block plus its top-k temporaries (256 MiB); on the CPU, also the budget
of the ``N × k`` heaps that let a self-query use the symmetry of the distance matrix."""

CPU_TILE = 4096
"""Columns of one CPU distance tile (and its rows when a caller sets ``chunk_size``: square tiles then)."""

CPU_TILE_ROWS = 512
"""Rows of one CPU distance tile by default: a ``512 × 4096`` float32 tile (8 MiB) stays in the last-level cache
between the matrix product that writes it and the heap passes that read it, where a ``4096 × 4096`` one (64 MiB)
went to memory and back twice. At 100k × 64 (self-query, k = 64, 2 threads) the whole search took a median 15.2 s
with these strips against 17.8 s with square 4096 tiles; at 20k 0.93 against 0.99 s (docs/BENCHMARKS.md, session
24). Query-streamed search gains little (20k queries against 100k: 4.6 against 4.7 s)."""

_SCAN = 32
"""Tile columns tested together for any candidate before the per-element heap updates (row heaps)."""

_COL_RUN = 1024
"""Tile columns owned by one thread when a tile feeds the heaps of its columns (per row: one contiguous run)."""


GPU_BLOCK_BYTES_MAX = 4 * 2**30
"""On a GPU the distance block may grow to an eighth of the free device memory, up to 4 GiB: at 1M points a 256 MiB
block holds 64 query rows, and the per-block launches and synchronisations, not the arithmetic, would set the time."""


def device_block_bytes(device: torch.device) -> int:
    """Default block budget on ``device``: :data:`DEFAULT_BLOCK_BYTES`, or on CUDA an eighth of the free memory
    between that and :data:`GPU_BLOCK_BYTES_MAX`."""
    if device.type != "cuda":
        return DEFAULT_BLOCK_BYTES
    free, _total = torch.cuda.mem_get_info(device)
    return int(min(GPU_BLOCK_BYTES_MAX, max(DEFAULT_BLOCK_BYTES, free // 8)))


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


# ----------------------------------------------------------------------------------------------------------------
# CPU path: bounded heaps fed from distance tiles (numba).
# A heap row holds the k best (distance, index) pairs seen so far as a max-heap: the root is the worst kept pair, so a
# new candidate is compared with the root only (almost always a rejection) and, if better, replaces it.


@numba.njit(cache=True, nogil=True, inline="always")
def _replace_root(hv, hi, k, v, j):
    """Replace the root of the max-heap ``(hv, hi)`` (length ``k``, keyed by ``(value, index)``) with ``(v, j)``."""
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= k:
            break
        r = c + 1
        if r < k and (hv[r] > hv[c] or (hv[r] == hv[c] and hi[r] > hi[c])):
            c = r
        if hv[c] > v or (hv[c] == v and hi[c] > j):
            hv[pos] = hv[c]
            hi[pos] = hi[c]
            pos = c
        else:
            break
    hv[pos] = v
    hi[pos] = j


@numba.njit(parallel=True, cache=True, nogil=True)
def _feed_rows(block, row_sq, row0, col0, heap_v, heap_i, heap_row0, skip_self):  # pragma: no cover - compiled
    """Offer ``block[r, c] + row_sq[r]`` (gallery index ``col0 + c``) to the heap of query ``row0 + r``, which is
    heap row ``row0 + r - heap_row0``; with ``skip_self`` the gallery index equal to the query index is skipped."""
    n_rows, n_cols = block.shape
    k = heap_v.shape[1]
    for r in numba.prange(n_rows):
        q = row0 + r
        hv = heap_v[q - heap_row0]
        hi = heap_i[q - heap_row0]
        add = row_sq[r]
        top = hv[0]
        for s in range(0, n_cols, _SCAN):
            e = min(n_cols, s + _SCAN)
            # Branch-free (vectorised) test of the whole run first: almost every run holds no candidate at all.
            n_hits = 0
            for c in range(s, e):
                n_hits += block[r, c] + add <= top
            if n_hits == 0:
                continue
            for c in range(s, e):
                v = block[r, c] + add
                j = col0 + c
                if v < top or (v == top and j < hi[0]):
                    if skip_self and j == q:
                        continue
                    _replace_root(hv, hi, k, v, j)
                    top = hv[0]


@numba.njit(parallel=True, cache=True, nogil=True)
def _feed_cols(block, row_sq, row0, col0, heap_v, heap_i):  # pragma: no cover - compiled
    """Offer ``block[r, c] + row_sq[r]`` (index ``row0 + r``) to the heap of point ``col0 + c``: the transposed use
    of a symmetric tile. Threads own disjoint column runs and read the tile row by row (contiguous)."""
    n_rows, n_cols = block.shape
    k = heap_v.shape[1]
    n_runs = (n_cols + _COL_RUN - 1) // _COL_RUN
    for b in numba.prange(n_runs):
        s = b * _COL_RUN
        e = min(n_cols, s + _COL_RUN)
        top = np.empty(e - s, dtype=heap_v.dtype)
        for c in range(s, e):
            top[c - s] = heap_v[col0 + c, 0]
        for r in range(n_rows):
            add = row_sq[r]
            j = row0 + r
            for s2 in range(s, e, _SCAN):
                e2 = min(e, s2 + _SCAN)
                n_hits = 0
                for c in range(s2, e2):
                    n_hits += block[r, c] + add <= top[c - s]
                if n_hits == 0:
                    continue
                for c in range(s2, e2):
                    v = block[r, c] + add
                    g = col0 + c
                    if v < top[c - s] or (v == top[c - s] and j < heap_i[g, 0]):
                        _replace_root(heap_v[g], heap_i[g], k, v, j)
                        top[c - s] = heap_v[g, 0]


@numba.njit(parallel=True, cache=True, nogil=True)
def _heapsort_rows(heap_v, heap_i):  # pragma: no cover - compiled
    """Sort every heap row in place into ascending ``(value, index)`` order (heapsort: pop the max to the end)."""
    k = heap_v.shape[1]
    for q in numba.prange(heap_v.shape[0]):
        hv = heap_v[q]
        hi = heap_i[q]
        for end in range(k - 1, 0, -1):
            v, j = hv[end], hi[end]
            hv[end], hi[end] = hv[0], hi[0]
            _replace_root(hv[:end], hi[:end], end, v, j)


def _sort_heaps(heap_v: torch.Tensor, heap_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heap rows in ascending ``(value, index)`` order (in place)."""
    _heapsort_rows(heap_v.numpy(), heap_i.numpy())
    return heap_v, heap_i


class _TileProducts:
    """``‖g_J‖² − 2 x_I·g_Jᵀ`` tiles written into one reused buffer (no allocation per tile)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, tile_rows: int, tile_cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.cols_sq = (cols * cols).sum(dim=1)
        self.buffer = torch.empty(min(tile_rows, rows.shape[0]) * min(tile_cols, cols.shape[0]), dtype=rows.dtype)

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        out = self.buffer[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
        torch.addmm(self.cols_sq[None, c0:c1], self.rows[r0:r1], self.cols[c0:c1].T, alpha=-2.0, out=out)
        return out.numpy()


def _new_heaps(n: int, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # (inf, int64 max) loses to every real candidate, including an overflowed inf distance.
    return torch.full((n, k), float("inf"), dtype=dtype), torch.full((n, k), torch.iinfo(torch.long).max)


def _symmetric_cpu(x: torch.Tensor, k: int, tile_rows: int, tile_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All-points k-NN (self excluded) of ``x`` ``(N, D)`` on the CPU, each pair of points computed once: row strip
    ``I`` meets its own square block (both sides fed along its rows) and then every column tile to its right (fed
    along rows and along columns); the pairs left of the block were fed by earlier strips."""
    n = x.shape[0]
    sq = ((x * x).sum(dim=1)).numpy()
    heap_v, heap_i = _new_heaps(n, k, x.dtype)
    hv, hi = heap_v.numpy(), heap_i.numpy()
    products = _TileProducts(x, x, tile_rows, max(tile_rows, tile_cols))
    for r0 in range(0, n, tile_rows):
        r1 = min(r0 + tile_rows, n)
        _feed_rows(products(r0, r1, r0, r1), sq[r0:r1], r0, r0, hv, hi, 0, True)
        for c0 in range(r1, n, tile_cols):
            c1 = min(c0 + tile_cols, n)
            block = products(r0, r1, c0, c1)
            _feed_rows(block, sq[r0:r1], r0, c0, hv, hi, 0, False)
            _feed_cols(block, sq[r0:r1], r0, c0, hv, hi)
    return _sort_heaps(heap_v, heap_i)


def _streamed_cpu(queries: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool, tile_rows: int):
    """Yield ``(start, sq_dist, idx)`` per block of ``tile_rows`` queries; gallery in tiles of ``CPU_TILE`` columns."""
    n_g = gallery.shape[0]
    tile_cols = min(n_g, CPU_TILE)
    products = _TileProducts(queries, gallery, tile_rows, tile_cols)
    for r0 in range(0, queries.shape[0], tile_rows):
        r1 = min(r0 + tile_rows, queries.shape[0])
        sq = ((queries[r0:r1] * queries[r0:r1]).sum(dim=1)).numpy()
        heap_v, heap_i = _new_heaps(r1 - r0, k, queries.dtype)
        hv, hi = heap_v.numpy(), heap_i.numpy()
        for c0 in range(0, n_g, tile_cols):
            c1 = min(c0 + tile_cols, n_g)
            _feed_rows(products(r0, r1, c0, c1), sq, r0, c0, hv, hi, r0, exclude_self)
        yield r0, *_sort_heaps(heap_v, heap_i)


def _iter_cpu(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool,
    chunk_size: int | None,
    block_bytes: int,
    dtype: torch.dtype,
):
    """CPU branch of :func:`iter_exact_knn`: symmetric tiles for a self-query whose ``N × k`` heaps fit
    ``block_bytes``, query-streamed tiles otherwise. Tiles are :data:`CPU_TILE_ROWS` × :data:`CPU_TILE`;
    ``chunk_size`` sets their rows instead (and the symmetric path's columns: square tiles)."""
    # numba's pool follows torch's thread setting, so torch.set_num_threads limits both halves of the work.
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    tile_rows = chunk_size if chunk_size is not None else CPU_TILE_ROWS
    tile_cols = chunk_size if chunk_size is not None else CPU_TILE
    g = gallery.detach().to(device="cpu", dtype=dtype).contiguous()
    if exclude_self and g.shape[0] * k * 12 <= block_bytes:
        vals, idx = _symmetric_cpu(g, k, tile_rows, tile_cols)
        vals = vals.clamp_min_(0.0).to(torch.float32)
        for start in range(0, g.shape[0], tile_rows):
            yield start, vals[start : start + tile_rows], idx[start : start + tile_rows]
        return
    q = g if exclude_self else queries.detach().to(device="cpu", dtype=dtype).contiguous()
    for start, vals, idx in _streamed_cpu(q, g, k, exclude_self, tile_rows):
        yield start, vals.clamp_min_(0.0).to(torch.float32), idx


def iter_exact_knn(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    block_bytes: int | None = None,
):
    """Yield ``(start, sq_dist, idx)`` per query chunk, tensors on the compute device; see :func:`exact_knn`.
    ``block_bytes``: default :func:`device_block_bytes` of the compute device.

    Inputs must already be validated 2-D float tensors. Used by :func:`exact_knn` and by the retrieval metrics,
    which consume each chunk's neighbours and discard them, so that no ``(Q × k)`` result is ever materialised.
    """
    dev = resolve_device(device, gallery)
    # float64 stays float64 (used by exact tests); everything else is computed in float32.
    dtype = torch.float64 if gallery.dtype == torch.float64 and queries.dtype == torch.float64 else torch.float32
    if block_bytes is None:
        block_bytes = device_block_bytes(dev)
    if dev.type == "cpu":
        yield from _iter_cpu(queries, gallery, k, exclude_self, chunk_size, block_bytes, dtype)
        return
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
        chunk_size: query rows per block; default: on the CPU :data:`CPU_TILE` (tiles of ``chunk_size`` rows by
            ``CPU_TILE`` columns, or ``chunk_size`` by ``chunk_size`` in a symmetric self-query); elsewhere as many
            rows as fit the block budget (:func:`device_block_bytes`: 256 MiB, on CUDA up to 4 GiB).
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
        chunk_size: query rows per distance block; default: a 4096-row tile on the CPU, sized on a GPU from
            :func:`device_block_bytes` (an eighth of the free memory, 256 MiB to 4 GiB), so memory stays bounded for
            1M points.

    ``search`` and ``neighbours`` return NumPy ``float32`` squared distances and ``int64`` indices, ascending, ties by
    index (the :class:`~smartmine.index.base.NeighbourIndex` contract).
    """

    name = "exact"

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
