"""k-NN through faiss (optional dependency): exact ``IndexFlatL2`` or graph-based ``IndexHNSWFlat``.

faiss is imported when an index is built, so ``smartmine.index`` stays importable without it; a missing install
raises an ``ImportError`` that says how to get it (``pip install smartmine[faiss]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from smartmine._validation import check_positive_int
from smartmine.index.base import NeighbourIndex, drop_self, to_numpy_f32

_KINDS = ("hnsw", "flat")


def import_faiss() -> Any:
    """Import faiss or raise an ``ImportError`` with the install hint."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "FaissIndex needs faiss, an optional dependency: pip install smartmine[faiss] (or faiss-cpu / faiss-gpu)"
        ) from exc
    return faiss


class FaissIndex(NeighbourIndex):
    """faiss-backed index with the :class:`~smartmine.index.base.NeighbourIndex` interface.

    Args:
        kind: ``"flat"`` (exact, ``IndexFlatL2``) or ``"hnsw"`` (approximate, ``IndexHNSWFlat``; default).
        hnsw_m: HNSW links per vertex (default 32). More: better recall, more memory and build time.
        ef_construction: HNSW candidate-list size during construction (default 80). More: better graph, slower build.
        ef_search: HNSW candidate-list size during search (default 64); raised to ``k`` when smaller. The speed/recall
            knob of ``kind="hnsw"``.
        n_threads: faiss OpenMP threads (default: faiss's setting).

    Distances are squared Euclidean (float32), ascending; faiss's ``-1`` padding becomes distance ``inf``.
    """

    name = "faiss"

    def __init__(
        self,
        kind: str = "hnsw",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        n_threads: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"kind: expected one of {_KINDS}, got {kind!r}")
        self.kind = kind
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m")
        self.ef_construction = check_positive_int(ef_construction, "ef_construction")
        self.ef_search = check_positive_int(ef_search, "ef_search")
        self.n_threads = None if n_threads is None else check_positive_int(n_threads, "n_threads")
        self._index: Any = None
        self._x: np.ndarray | None = None

    def _build(self, x: torch.Tensor) -> None:
        faiss = import_faiss()
        if self.n_threads is not None:
            faiss.omp_set_num_threads(self.n_threads)
        pts = to_numpy_f32(x, "x")
        d = pts.shape[1]
        if self.kind == "flat":
            index = faiss.IndexFlatL2(d)
        else:
            index = faiss.IndexHNSWFlat(d, self.hnsw_m)
            index.hnsw.efConstruction = self.ef_construction
        index.add(pts)
        self._index = index
        self._x = pts

    def _query(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = max(self.ef_search, k)
        d, i = self._index.search(q, k)
        d = np.ascontiguousarray(d, dtype=np.float32)
        i = np.ascontiguousarray(i, dtype=np.int64)
        d[i < 0] = np.inf
        # Round-off of faiss's ‖q‖² + ‖x‖² − 2q·x can dip below zero.
        np.maximum(d, 0.0, out=d)
        return d, i

    def _search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._query(to_numpy_f32(queries, "queries"), k)

    def _neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._x is not None
        d, i = self._query(self._x, k + 1)
        return drop_self(d, i, k)
