"""smartmine: deep metric learning with dataset-wide smart triplet mining and distance-weighted sampling."""

__version__ = "0.1.0"
