"""Nearest-neighbour indexes with one interface: ``build(x)``, ``search(queries, k)``, ``neighbours(k)``."""

from smartmine.index.base import NeighbourIndex

__all__ = ["NeighbourIndex"]
