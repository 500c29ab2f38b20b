"""Image lists for inference: a folder (class-per-folder or flat), a CSV list, single files, or a mix of them.

A folder whose images all sit in sub-folders is *labelled*: an image's class is the name of its top-level sub-folder
(the layout ``smartmine train`` reads with ``data.name: folder``). A folder with images directly inside it is
*unlabelled* (every image of the tree is taken, none has a class). A CSV lists ``path[,label]`` rows (header
optional; with a header the columns ``path``, ``label``, ``is_query`` and ``is_gallery`` are recognised in any
order); relative paths are relative to the CSV file's folder.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartmine.data.images import IMAGE_EXTENSIONS, BadImageError, check_image, display_path
from smartmine.inference.errors import InferenceError

_FLAG_COLUMNS = ("is_query", "is_gallery")
_TRUE = ("1", "true", "yes", "y", "t")
_FALSE = ("0", "false", "no", "n", "f", "")


@dataclass
class ImageList:
    """Image files with optional class names.

    Attributes:
        paths: absolute file paths, ``N`` entries, in a stable (sorted or listed) order.
        labels: class name per image (``N`` strings), or ``None`` when the source has no classes.
        flags: boolean ``(N,)`` arrays read from a CSV's ``is_query`` / ``is_gallery`` columns (empty otherwise).
    """

    paths: list[str]
    labels: list[str] | None = None
    flags: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, mask: np.ndarray) -> ImageList:
        """The rows where ``mask`` (boolean ``(N,)``) is true."""
        rows = np.flatnonzero(mask)
        labels = None if self.labels is None else [self.labels[i] for i in rows]
        return ImageList([self.paths[i] for i in rows], labels, {k: v[rows] for k, v in self.flags.items()})


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_folder(root: Path) -> ImageList:
    found: list[tuple[str, str]] = []  # (relative path, absolute path)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if _is_image(name):
                full = os.path.join(dirpath, name)
                found.append((os.path.relpath(full, root), os.path.abspath(full)))
    if not found:
        raise InferenceError(
            f"{display_path(root)}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files)"
        )
    parts = [Path(rel).parts for rel, _ in found]
    labelled = all(len(p) >= 2 for p in parts)  # one image directly in the root makes the whole tree unlabelled
    return ImageList([full for _, full in found], [p[0] for p in parts] if labelled else None)


def _flag(text: str, where: str, column: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise InferenceError(f"{where}: {column} must be 0/1 or true/false, got {text!r}")


def _read_csv(path: Path) -> ImageList:
    where = display_path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(n, r) for n, r in enumerate(csv.reader(fh), start=1) if any(f.strip() for f in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InferenceError(f"{where}: cannot read the CSV file ({exc})") from exc
    if not rows:
        raise InferenceError(f"{where}: the CSV file lists no images")
    head = [f.strip().lower() for f in rows[0][1]]
    if "path" in head:
        cols = {c: head.index(c) for c in ("path", "label", *_FLAG_COLUMNS) if c in head}
        rows = rows[1:]
    else:
        cols = {"path": 0, **({"label": 1} if len(rows[0][1]) >= 2 else {})}
    if not rows:
        raise InferenceError(f"{where}: the CSV file has a header but no rows")
    base = path.parent
    paths: list[str] = []
    labels: list[str] = []
    flags: dict[str, list[bool]] = {c: [] for c in _FLAG_COLUMNS if c in cols}
    for number, row in rows:
        line = f"{where} line {number}"
        if len(row) <= max(cols.values()) or not row[cols["path"]].strip():
            raise InferenceError(f"{line}: expected the columns {', '.join(cols)}, got {row}")
        paths.append(os.path.abspath(os.path.join(base, row[cols["path"]].strip())))
        if "label" in cols:
            label = row[cols["label"]].strip()
            if not label:
                raise InferenceError(f"{line}: empty label")
            labels.append(label)
        for c in flags:
            flags[c].append(_flag(row[cols[c]], line, c))
    return ImageList(paths, labels if "label" in cols else None, {c: np.asarray(v) for c, v in flags.items()})


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> ImageList:
    """The images of ``source``: a folder, a ``.csv`` list, an image file, or a sequence of these.

    Several sources are concatenated; the result is labelled only if every part is. Raises
    :class:`~smartmine.inference.errors.InferenceError` for a missing path or a source without images.
    """
    if isinstance(source, str | os.PathLike):
        p = Path(source).expanduser()
        if p.is_dir():
            return _scan_folder(p)
        if p.suffix.lower() == ".csv" and p.is_file():
            return _read_csv(p)
        if p.is_file():
            return ImageList([os.path.abspath(p)])
        raise InferenceError(f"{display_path(p)}: no such file or folder")
    if not isinstance(source, list | tuple):
        raise InferenceError(f"expected image paths, folders or CSV files, got {type(source).__name__}")
    parts = [list_images(s) for s in source]
    if not parts:
        raise InferenceError("no images given")
    labelled = all(part.labels is not None for part in parts)
    return ImageList(
        [p for part in parts for p in part.paths],
        [lab for part in parts for lab in part.labels] if labelled else None,  # type: ignore[union-attr]
    )


def check_readable(paths: Sequence[str]) -> None:
    """Raise :class:`~smartmine.data.images.BadImageError` for the first unreadable image (header check, about
    0.1–0.3 ms a file), adding how many others are unreadable too; done before any embedding starts."""
    bad: list[BadImageError] = []
    for p in paths:
        try:
            check_image(p, "header")
        except BadImageError as exc:
            bad.append(exc)
    if bad:
        others = ", ".join(display_path(b.path) for b in bad[1:4]) + (", …" if len(bad) > 4 else "")
        more = f" (also unreadable, {len(bad) - 1} more: {others})" if len(bad) > 1 else ""
        raise BadImageError(bad[0].path, bad[0].reason + more)
