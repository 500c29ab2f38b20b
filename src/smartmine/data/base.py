"""The common dataset type: ``dataset[i] -> (image_tensor, label, i)`` with class-level metadata.

Every dataset of :mod:`smartmine.data` is a :class:`MetricDataset`: a ``torch.utils.data.Dataset`` whose items are
``(image, label, index)`` triples (the index lets the trainer write embeddings back to their rows), with

* ``labels``: ``np.int64`` array of shape ``(N,)``, remapped to ``0 .. C-1`` within the split, in the order of
  ``class_names``;
* ``class_names``: ``list[str]`` of length ``C``;
* ``paths``: ``list[str]`` of length ``N`` for file-backed datasets, ``None`` for in-memory ones;
* ``transform``: settable callable ``PIL.Image -> tensor``; ``None`` gives a float tensor in ``[0, 1]`` of shape
  ``(channels, H, W)``;
* ``singleton_classes``: class ids with exactly one image (kept for evaluation; the trainer must not use them as
  anchors), and ``num_skipped`` / ``skipped_files`` for files dropped with ``on_bad_image="skip"``.

Two concrete kinds: :class:`ArrayDataset` (uint8 images in memory: glyphs, digits) and :class:`ImageFileDataset`
(image files decoded on access: the photo benchmarks, folders, CSV lists).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from smartmine.data.images import VERIFY_LEVELS, BadImageError, check_image, display_path, load_image

logger = logging.getLogger("smartmine.data")

Transform = Callable[[Image.Image], torch.Tensor]
ON_BAD_IMAGE: tuple[str, ...] = ("fail", "skip")


class DatasetLayoutError(ValueError):
    """A dataset root that is missing or does not have the expected layout (the message says what and where)."""


def _to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 tensor ``(C, H, W)`` in ``[0, 1]`` (what ``transform=None`` returns)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


class MetricDataset(Dataset):
    """Base class: labelled images for metric learning. Subclasses implement :meth:`load_pil` and :meth:`__len__`.

    Args:
        labels: integer array ``(N,)`` of indices into ``class_names``; classes with no image are dropped and the
            rest renumbered ``0 .. C-1`` keeping their order.
        class_names: names of the candidate classes.
        transform: ``PIL.Image -> tensor`` applied on access (default ``None``: plain ``[0, 1]`` tensor).
        name, split: recorded for messages and reports.
        kind: ``"photo"`` (RGB photos, use the photo transform presets) or ``"small"`` (small grayscale arrays).
        sample_info: optional per-sample arrays of length ``N`` (e.g. In-Shop's ``is_query``), kept aligned.
        remap: ``True`` (default) drops classes without images and renumbers the rest; ``False`` keeps ``labels``
            as given (used when two splits must share ids, e.g. In-Shop's query and gallery).
    """

    kind: str = "photo"

    def __init__(
        self,
        labels: np.ndarray | Sequence[int],
        class_names: Sequence[str],
        transform: Transform | None = None,
        *,
        name: str = "dataset",
        split: str = "all",
        sample_info: dict[str, np.ndarray] | None = None,
        remap: bool = True,
    ) -> None:
        raw = np.asarray(labels)
        if raw.ndim != 1:
            raise ValueError(f"labels: expected a 1-D array, got shape {raw.shape}")
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"labels: expected integer class indices, got dtype {raw.dtype}")
        raw = raw.astype(np.int64)
        names = [str(c) for c in class_names]
        if raw.size and (raw.min() < 0 or raw.max() >= len(names)):
            raise ValueError(f"labels: values must lie in [0, {len(names)}), got range [{raw.min()}, {raw.max()}]")
        if raw.size == 0:
            raise ValueError(f"{name} ({split} split): no images")
        if remap:
            present, inverse = np.unique(raw, return_inverse=True)
            self.labels: np.ndarray = inverse.astype(np.int64).reshape(-1)
            self.class_names: list[str] = [names[i] for i in present]
        else:
            self.labels = raw
            self.class_names = names
        self.transform = transform
        self.name = name
        self.split = split
        self.sample_info: dict[str, np.ndarray] = {}
        for key, values in (sample_info or {}).items():
            values = np.asarray(values)
            if values.shape[:1] != raw.shape:
                raise ValueError(f"sample_info[{key!r}]: expected length {raw.size}, got shape {values.shape}")
            self.sample_info[key] = values
        self.num_skipped: int = 0
        self.skipped_files: list[str] = []
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        self.singleton_classes: np.ndarray = np.flatnonzero(counts == 1).astype(np.int64)
        if self.singleton_classes.size:
            logger.info(
                "%s (%s): %d class(es) have a single image; kept for evaluation, not usable as anchors",
                name,
                split,
                self.singleton_classes.size,
            )

    # --- subclass interface -------------------------------------------------------------------------------------
    def load_pil(self, index: int) -> Image.Image:
        """Return image ``index`` as a PIL image (no transform applied)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    # --- common behaviour ---------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes ``C`` in this split."""
        return len(self.class_names)

    @property
    def paths(self) -> list[str] | None:
        """File path of each image, or ``None`` for in-memory data."""
        return None

    def class_counts(self) -> np.ndarray:
        """Images per class, ``np.int64`` array of shape ``(C,)``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def indices_per_class(self) -> list[np.ndarray]:
        """For each class ``c``, the sorted row indices whose label is ``c`` (list of ``C`` int64 arrays)."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.cumsum(self.class_counts())[:-1]
        return [np.asarray(part, dtype=np.int64) for part in np.split(order, bounds)]

    def _row(self, index: int) -> int:
        """``index`` as a row in ``[0, N)`` (negative counts from the end); else ``IndexError`` naming the split."""
        n = len(self)
        i = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {self.name} ({self.split}) with {n} images")
        return i

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        i = self._row(index)
        img = self.load_pil(i)
        tensor = _to_unit_tensor(img) if self.transform is None else self.transform(img)
        return tensor, int(self.labels[i]), i

    def __repr__(self) -> str:
        extra = f", skipped={self.num_skipped}" if self.num_skipped else ""
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}{extra})"
        )


class ArrayDataset(MetricDataset):
    """In-memory uint8 images: ``images`` of shape ``(N, H, W)`` (grayscale) or ``(N, H, W, 3)`` (RGB).

    The transform receives a PIL image (mode ``"L"`` or ``"RGB"``); ``images`` stays available (read-only) for code
    that wants to batch the raw array directly, e.g. a raw-pixel baseline.
    """

    kind = "small"

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | Sequence[int],
        class_names: Sequence[str],
        transform: Transform | None = None,
        **kwargs: Any,
    ) -> None:
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise ValueError(f"images: expected dtype uint8, got {arr.dtype}")
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3)):
            raise ValueError(f"images: expected shape (N, H, W) or (N, H, W, 3), got {arr.shape}")
        if arr.shape[0] != np.asarray(labels).shape[0]:
            raise ValueError(f"labels: length {np.asarray(labels).shape[0]} does not match {arr.shape[0]} images")
        super().__init__(labels, class_names, transform, **kwargs)
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        arr = np.ascontiguousarray(arr).view()  # a read-only view: the caller's array stays writable
        arr.setflags(write=False)
        self.images = arr

    def load_pil(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if self.transform is None:  # fast path: skip the PIL round trip
            i = self._row(index)
            arr = self.images[i]
            t = torch.from_numpy((arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).astype(np.float32))
            return t.div_(255.0), int(self.labels[i]), i
        return super().__getitem__(index)


class ImageFileDataset(MetricDataset):
    """Images decoded from files on access (converted to RGB: greyscale, palette and RGBA files become 3-channel).

    Args:
        paths: file of each image.
        labels: class index (into ``class_names``) of each image.
        class_names: candidate class names.
        transform: see :class:`MetricDataset`.
        sources: optional description of where each path was listed (``"images.txt line 17"``), used in errors.
        on_bad_image: ``"fail"`` (default): a missing file raises at construction, a corrupt one when it is loaded;
            ``"skip"``: files failing verification are dropped at construction, counted in ``num_skipped`` and
            ``skipped_files``, and logged.
        verify: verification level run at construction (see :mod:`smartmine.data.images`); default ``"exists"``
            with ``on_bad_image="fail"`` and ``"header"`` with ``"skip"``.
        **kwargs: ``name``, ``split``, ``sample_info`` of :class:`MetricDataset`.
    """

    kind = "photo"

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray | Sequence[int],
        class_names: Sequence[str],
        transform: Transform | None = None,
        *,
        sources: Sequence[str] | None = None,
        on_bad_image: str = "fail",
        verify: str | None = None,
        **kwargs: Any,
    ) -> None:
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image: expected one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
        if verify is None:
            verify = "exists" if on_bad_image == "fail" else "header"
        if verify not in VERIFY_LEVELS:
            raise ValueError(f"verify: expected one of {VERIFY_LEVELS}, got {verify!r}")
        paths = [str(p) for p in paths]
        labels = np.asarray(labels)
        if labels.shape != (len(paths),):
            raise ValueError(f"labels: expected shape ({len(paths)},) to match paths, got {labels.shape}")
        if sources is not None and len(sources) != len(paths):
            raise ValueError(f"sources: expected {len(paths)} entries, got {len(sources)}")
        sample_info = dict(kwargs.pop("sample_info", None) or {})
        keep = np.ones(len(paths), dtype=bool)
        skipped: list[str] = []
        first_error: BadImageError | None = None
        for i, path in enumerate(paths):
            try:
                check_image(path, verify, None if sources is None else sources[i])
            except BadImageError as exc:
                first_error = first_error or exc
                keep[i] = False
                skipped.append(path)
                logger.debug("skipping %s", exc)
        if first_error is not None and on_bad_image == "fail":
            # Name every bad file at once (up to a few), not just the first: fixing them one rerun at a time is slow.
            if len(skipped) > 1:
                shown = ", ".join(display_path(p) for p in skipped[1:4]) + (", ..." if len(skipped) > 4 else "")
                raise BadImageError(first_error.path, f"{first_error.reason}; {len(skipped) - 1} more bad "
                                    f"file(s): {shown}", first_error.source)
            raise first_error
        if skipped:
            lost = sorted(set(labels.tolist()) - set(labels[keep].tolist()))
            paths = [p for p, k in zip(paths, keep, strict=True) if k]
            labels = labels[keep]
            sources = None if sources is None else [s for s, k in zip(sources, keep, strict=True) if k]
            sample_info = {key: np.asarray(v)[keep] for key, v in sample_info.items()}
            logger.warning(
                "%s (%s): skipped %d unreadable image file(s), e.g. %s%s",
                kwargs.get("name", "dataset"),
                kwargs.get("split", "all"),
                len(skipped),
                ", ".join(display_path(p) for p in skipped[:3]),
                f"; {len(lost)} class(es) lost all their images" if lost else "",
            )
        super().__init__(labels, class_names, transform, sample_info=sample_info, **kwargs)
        self._paths = paths
        self._sources = None if sources is None else list(sources)
        self.num_skipped = len(skipped)
        self.skipped_files = skipped
        self.verify = verify
        self.on_bad_image = on_bad_image

    @property
    def paths(self) -> list[str]:
        return self._paths

    def load_pil(self, index: int) -> Image.Image:
        source = None if self._sources is None else self._sources[index]
        return load_image(self._paths[index], "RGB", source)
