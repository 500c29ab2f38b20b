"""Thumbnails of training and test images, rebuilt from the run's dataset config.

Images are never stored in the run folder; the report reloads the dataset the config names. That can fail (the
dataset root moved, a file went missing, the config is gone): :func:`open_images` then returns ``None`` with a reason,
and the galleries say so instead of the report failing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

THUMB_SIZE = 64
"""Longest side of a thumbnail in pixels (the thumbnails are drawn at a few tenths of an inch)."""


class ImageSource:
    """Thumbnails of one split: ``thumb(i)`` is an ``(h, w)`` or ``(h, w, 3)`` uint8 array (``None``: unreadable)."""

    def __init__(self, dataset: Any, size: int = THUMB_SIZE) -> None:
        self.dataset = dataset
        self.size = size
        self._cache: dict[int, np.ndarray | None] = {}
        self.failures: list[str] = []

    def __len__(self) -> int:
        return len(self.dataset)

    def class_name(self, label: int) -> str:
        """The dataset's name of class ``label`` (a folder name, a CSV label, a glyph); ``c<label>`` if unknown."""
        names = getattr(self.dataset, "class_names", None)
        i = int(label)
        return str(names[i]) if names is not None and 0 <= i < len(names) else f"c{i}"

    @property
    def grayscale(self) -> bool:
        images = getattr(self.dataset, "images", None)
        return images is not None and images.ndim == 3

    def thumb(self, index: int) -> np.ndarray | None:
        """Image ``index`` shrunk so that its longest side is at most :attr:`size` (cached)."""
        i = int(index)
        if i in self._cache:
            return self._cache[i]
        out: np.ndarray | None = None
        if 0 <= i < len(self.dataset):
            try:
                img = self.dataset.load_pil(i)
                img.thumbnail((self.size, self.size))
                out = np.asarray(img.convert("L" if img.mode in ("L", "1", "I", "F") else "RGB"))
            except Exception as exc:  # noqa: BLE001 — any unreadable image becomes a blank tile, reported once
                if len(self.failures) < 5:
                    self.failures.append(f"image {i}: {exc}")
        self._cache[i] = out
        return out


def open_images(config: Any | None, split: str) -> tuple[ImageSource | None, str | None]:
    """The images of ``split`` (``"train"`` or ``"test"``) of the run's dataset, or ``(None, reason)``.

    Args:
        config: the run's :class:`~smartmine.training.config.RunConfig` (``None``: no thumbnails).
        split: ``"train"`` (mined-triplet gallery) or ``"test"`` (retrieval gallery, embedding map).
    """
    if config is None:
        return None, "the run's config.yaml is missing, so the dataset is unknown"
    from smartmine.data import load_dataset

    data = config.data
    try:
        # The run's own on_bad_image: with "skip", the images the run left out must be left out here too, or the
        # rows no longer line up with the saved embeddings.
        dataset = load_dataset(data.name, root=data.root, split=split, seed=config.seed,
                               on_bad_image=data.on_bad_image, **dict(data.options))
        if split == "train" and data.holdout_classes:  # the rows the run trained on
            from smartmine.training.builders import split_holdout

            dataset = split_holdout(config, dataset)[0]
    except Exception as exc:  # noqa: BLE001 — a missing root, a moved file, an unknown option: all say "no images"
        where = f" at '{data.root}'" if data.root else ""
        return None, f"the {split} images of dataset '{data.name}'{where} could not be loaded ({exc})"
    return ImageSource(dataset), None
