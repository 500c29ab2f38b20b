"""Datasets, transforms and batch samplers.

``load_dataset(name, root, split, transform)`` reads glyphs (the embedded default), digits, cub100, CUB-200-2011,
Cars196, Stanford Online Products, In-Shop, a class-per-folder tree or a CSV list into a :class:`MetricDataset`
whose items are ``(image_tensor, label, index)``.
"""

from smartmine.data.base import ArrayDataset, DatasetLayoutError, ImageFileDataset, MetricDataset
from smartmine.data.glyphs import GLYPH_FACES, load_glyphs, render_glyph_set
from smartmine.data.images import BadImageError, check_image, load_image
from smartmine.data.registry import DatasetSpec, available_datasets, load_dataset, register_dataset
from smartmine.data.samplers import PKBatchSampler
from smartmine.data.transforms import IMAGENET_MEAN, IMAGENET_STD, get_transform, photo_transform, small_transform

__all__ = [
    "GLYPH_FACES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArrayDataset",
    "BadImageError",
    "DatasetLayoutError",
    "DatasetSpec",
    "ImageFileDataset",
    "MetricDataset",
    "PKBatchSampler",
    "available_datasets",
    "check_image",
    "get_transform",
    "load_dataset",
    "load_glyphs",
    "load_image",
    "photo_transform",
    "register_dataset",
    "render_glyph_set",
    "small_transform",
]
