"""Nearest-neighbour indexes with one interface: ``build(x)``, ``search(queries, k)``, ``neighbours(k)``.

- :class:`ExactIndex`: chunked matrix-product top-k in torch (CPU or CUDA), exact.
- :class:`FanngIndex`: FANNG graph (Harwood & Drummond, CVPR 2016) with numba kernels, approximate.
- :class:`FaissIndex`: faiss HNSW or flat (optional extra ``smartmine[faiss]``; faiss is imported on ``build``).
"""

from smartmine.index.base import NeighbourIndex
from smartmine.index.exact import ExactIndex, exact_knn
from smartmine.index.faiss_index import FaissIndex
from smartmine.index.fanng import FanngIndex

__all__ = ["ExactIndex", "FaissIndex", "FanngIndex", "NeighbourIndex", "exact_knn"]
