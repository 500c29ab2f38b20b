"""``folder``: a class-per-folder image tree, ``root/<class name>/**/<image>``.

Classes are the sub-folders of ``root`` in sorted order; by default the first half (``ceil(C / 2)``) are the
training classes and the rest the test classes, or ``train_classes=[...]`` names them. Files whose suffix is not
in :data:`smartmine.data.images.IMAGE_EXTENSIONS` and hidden files/folders (``.DS_Store``, ``.git``) are ignored;
a file with an image suffix but the wrong content (a PNG called ``.jpg`` loads fine, a text file called ``.jpg``
does not) is handled by ``on_bad_image``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from smartmine.data.base import DatasetLayoutError, ImageFileDataset, Transform
from smartmine.data.images import IMAGE_EXTENSIONS, display_path
from smartmine.data.splits import check_split, first_half_split

logger = logging.getLogger("smartmine.data")
_warned_empty: set[str] = set()
"""Class folders already reported as empty: the train, test and report loads of one run warn once, not thrice."""


def _scan_class(folder: Path) -> tuple[list[str], int]:
    """Image files under ``folder`` (recursively, sorted, hidden entries skipped) and the number of other files."""
    images, others = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            if os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                images.append(os.path.join(dirpath, fname))
            else:
                others += 1
    return images, others


def load_image_folder(
    root,
    split: str = "train",
    transform: Transform | None = None,
    *,
    train_classes: Sequence[str] | None = None,
    **kwargs,
) -> ImageFileDataset:
    """Images of ``split`` (``"train"``, ``"test"``, ``"all"``) from a class-per-folder tree under ``root``.

    ``kwargs`` (``on_bad_image``, ``verify``) go to :class:`~smartmine.data.base.ImageFileDataset`.
    """
    check_split(split)
    if root is None:
        raise DatasetLayoutError("folder: root is required: a folder with one sub-folder of images per class")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetLayoutError(
            f"folder: dataset root {display_path(base)} does not exist (expected one sub-folder of images per class)"
        )
    class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: dict[str, list[str]] = {}
    ignored = 0
    for d in class_dirs:
        images, others = _scan_class(d)
        ignored += others
        if images:
            found[d.name] = images
        elif str(d.resolve()) not in _warned_empty:
            _warned_empty.add(str(d.resolve()))
            logger.warning("folder: class folder %s has no image files; ignored", display_path(d))
    if not found:
        raise DatasetLayoutError(
            f"folder: no class sub-folders with images under {display_path(base)} (expected "
            f"{display_path(base)}/<class>/<image>{{{','.join(sorted(IMAGE_EXTENSIONS))}}})"
        )
    if ignored:
        logger.info("folder: ignored %d file(s) without an image suffix under %s", ignored, display_path(base))
    chosen = first_half_split(list(found), split, train_classes)
    paths, labels = [], []
    for k, cname in enumerate(chosen):
        paths += found[cname]
        labels += [k] * len(found[cname])
    return ImageFileDataset(paths, labels, chosen, transform, name="folder", split=split, **kwargs)
