"""Datasets of smartmine, gathered in one module (the implementation lives in the small modules it imports).

* :class:`MetricDataset` (``dataset[i] -> (image, label, i)``), :class:`ArrayDataset` (in memory),
  :class:`ImageFileDataset` (files): :mod:`smartmine.data.base`.
* :func:`load_dataset` and the registry: :mod:`smartmine.data.registry`.
* Readers: glyphs (:mod:`~smartmine.data.glyphs`), digits, the benchmarks' official layouts
  (:mod:`~smartmine.data.layouts`), class-per-folder trees (:mod:`~smartmine.data.image_folder`), CSV lists
  (:mod:`~smartmine.data.csv_list`).
"""

from __future__ import annotations

from smartmine.data.base import ArrayDataset, DatasetLayoutError, ImageFileDataset, MetricDataset
from smartmine.data.csv_list import load_csv
from smartmine.data.digits import load_digits_dataset
from smartmine.data.glyphs import GLYPH_FACES, load_glyphs, render_glyph_set
from smartmine.data.image_folder import load_image_folder
from smartmine.data.images import BadImageError, check_image, load_image
from smartmine.data.layouts import load_cars196, load_cub100, load_cub200, load_inshop, load_sop
from smartmine.data.registry import DatasetSpec, available_datasets, get_dataset_spec, load_dataset, register_dataset

__all__ = [
    "GLYPH_FACES",
    "ArrayDataset",
    "BadImageError",
    "DatasetLayoutError",
    "DatasetSpec",
    "ImageFileDataset",
    "MetricDataset",
    "available_datasets",
    "check_image",
    "get_dataset_spec",
    "load_cars196",
    "load_csv",
    "load_cub100",
    "load_cub200",
    "load_dataset",
    "load_digits_dataset",
    "load_glyphs",
    "load_image",
    "load_image_folder",
    "load_inshop",
    "load_sop",
    "register_dataset",
    "render_glyph_set",
]
