"""smartmine: deep metric learning with dataset-wide smart triplet mining and distance-weighted sampling.

``smartmine.load(run)`` and ``smartmine.GalleryIndex`` (from :mod:`smartmine.inference`) are imported on first use,
so ``import smartmine`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {"load": "smartmine.inference", "GalleryIndex": "smartmine.inference"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smartmine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
