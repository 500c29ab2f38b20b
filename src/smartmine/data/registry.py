"""``load_dataset(name, ...)``: every dataset behind one call, with options validated before any work starts.

>>> train = load_dataset("glyphs", split="train", transform="train")   # doctest: +SKIP
>>> test = load_dataset("cub200", root="~/data", split="test", transform="test", on_bad_image="skip")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from smartmine._registry import Registry, did_you_mean
from smartmine.data.base import ON_BAD_IMAGE, MetricDataset, Transform
from smartmine.data.csv_list import load_csv
from smartmine.data.digits import load_digits_dataset
from smartmine.data.glyphs import load_glyphs
from smartmine.data.image_folder import load_image_folder
from smartmine.data.layouts import INSHOP_SPLITS, load_cars196, load_cub100, load_cub200, load_inshop, load_sop
from smartmine.data.splits import CLASS_SPLITS, check_split
from smartmine.data.transforms import PRESETS, get_transform


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: ``loader(root?, split, transform, **options)``; ``kind`` picks the transform presets
    (``"photo"`` or ``"small"``); ``needs_root`` says whether it reads files; ``splits`` lists the valid splits."""

    name: str
    loader: Callable[..., MetricDataset]
    kind: str
    needs_root: bool
    splits: tuple[str, ...] = CLASS_SPLITS
    description: str = ""

    def options(self) -> list[str]:
        """Keyword options the loader accepts beyond root/split/transform."""
        params = inspect.signature(self.loader).parameters
        skip = {"root", "split", "transform", "kwargs"}
        return [p for p in params if p not in skip]


DATASETS: Registry[DatasetSpec] = Registry("dataset")
"""Every dataset :func:`load_dataset` knows, by name; ``data.name`` in a run config accepts exactly these."""
_FILE_OPTIONS = ("verify",)  # ImageFileDataset options accepted by every file-backed loader


def register_dataset(spec: DatasetSpec, *, overwrite: bool = False) -> None:
    """Add ``spec`` to the registry (``ValueError`` if the name is taken, unless ``overwrite``); from then on
    :func:`load_dataset` and run configs (``data.name``) accept it."""
    DATASETS.register(spec.name, spec, overwrite=overwrite)


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(DATASETS.names())


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name raises ``ValueError`` suggesting the nearest one."""
    return DATASETS.get(name, "name")


def check_dataset_options(spec: DatasetSpec, options: Mapping[str, object]) -> None:
    """``ValueError`` naming the first key of ``options`` that :func:`load_dataset` of ``spec`` would refuse."""
    allowed = [o for o in spec.options() if o != "seed"] + (list(_FILE_OPTIONS) if spec.needs_root else [])
    for key in options:
        if key not in allowed:
            shown = ", ".join(allowed) if allowed else "none"
            hint = did_you_mean(key, allowed)
            raise ValueError(f"{key}: not an option of dataset {spec.name!r} (its options: {shown}){hint}")


def load_dataset(
    name: str = "glyphs",
    root: str | None = None,
    split: str = "train",
    transform: Transform | str | None = None,
    *,
    seed: int = 0,
    on_bad_image: str = "fail",
    **options,
) -> MetricDataset:
    """Load dataset ``name``'s ``split`` as a :class:`~smartmine.data.base.MetricDataset`.

    Args:
        name: one of :func:`available_datasets` (default ``"glyphs"``, the embedded one).
        root: data location for file-backed datasets (a folder; for ``"csv"`` the CSV file); must be ``None`` for
            ``glyphs`` and ``digits``.
        split: ``"train"``, ``"test"`` or ``"all"`` (In-Shop also ``"query"`` and ``"gallery"``).
        transform: a callable ``PIL.Image -> tensor``, a preset name ``"train"`` / ``"test"`` (photo or
            small-grayscale preset according to the dataset), or ``None`` (plain ``[0, 1]`` tensors).
        seed: seeds the glyphs' class split and jitter (the other datasets are deterministic without it).
        on_bad_image: ``"fail"`` or ``"skip"`` for unreadable image files (see
            :class:`~smartmine.data.base.ImageFileDataset`).
        **options: dataset-specific options (e.g. ``variants_per_face`` for glyphs, ``train_classes`` for folder
            and csv, ``string_labels`` for csv, ``verify`` for every file-backed dataset); unknown ones raise
            ``ValueError`` naming the option and the nearest valid one.
    """
    spec = get_dataset_spec(name)
    check_split(split, spec.splits)
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image: expected one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    check_dataset_options(spec, options)
    if isinstance(transform, str):
        if transform not in PRESETS:
            raise ValueError(f"transform: expected a callable or a preset name in {PRESETS}, got {transform!r}")
        transform = get_transform(transform, spec.kind)
    elif transform is not None and not callable(transform):
        raise ValueError(f"transform: expected a callable, a preset name or None, got {type(transform).__name__}")
    if spec.needs_root:
        return spec.loader(root, split=split, transform=transform, on_bad_image=on_bad_image, **options)
    if root is not None:
        raise ValueError(f"root: dataset {name!r} is built in and takes no root, got {root!r}")
    if "seed" in inspect.signature(spec.loader).parameters:
        options["seed"] = seed
    return spec.loader(split=split, transform=transform, **options)


for _spec in (
    DatasetSpec("glyphs", load_glyphs, "small", False, description="characters rendered from matplotlib's fonts"),
    DatasetSpec("digits", load_digits_dataset, "small", False, description="scikit-learn's 8x8 digits"),
    DatasetSpec("cub100", load_cub100, "photo", True, description="the shared 100-class CUB subset"),
    DatasetSpec("cub200", load_cub200, "photo", True, description="CUB-200-2011"),
    DatasetSpec("cars196", load_cars196, "photo", True, description="Stanford Cars"),
    DatasetSpec("sop", load_sop, "photo", True, description="Stanford Online Products"),
    DatasetSpec("inshop", load_inshop, "photo", True, INSHOP_SPLITS, "DeepFashion In-Shop"),
    DatasetSpec("folder", load_image_folder, "photo", True, description="class-per-folder image tree"),
    DatasetSpec("csv", load_csv, "photo", True, description="CSV of path,label[,split]"),
):
    register_dataset(_spec)
