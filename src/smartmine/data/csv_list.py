"""``csv``: images listed in a CSV file of ``path,label[,split]`` rows.

* Header optional. A first row whose fields include ``path`` and ``label`` (any case) is a header, and then the
  columns may come in any order and extra columns are ignored; otherwise the columns are positional.
* Relative paths are relative to the CSV file's folder. The same file listed twice is an error (it would count as
  its own nearest neighbour in retrieval metrics), naming both lines.
* Labels must be non-negative integers; anything else is an error naming the line. With ``string_labels=True``
  labels are class names instead, mapped to ids in sorted order of the names (``class_names`` holds them).
* ``split`` values are ``train`` or ``test``; when the column is present it decides the split (``split="all"``
  keeps every row). Without it, the first half of the sorted class ids are the training classes (or
  ``train_classes=[...]`` names them), like the other datasets.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from smartmine.data.base import DatasetLayoutError, ImageFileDataset, Transform
from smartmine.data.images import display_path
from smartmine.data.splits import check_split, first_half_split

_SPLIT_VALUES = ("train", "test")


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [(n, row) for n, row in enumerate(csv.reader(fh), start=1) if any(f.strip() for f in row)]
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(f"csv: {display_path(path)} is not UTF-8 text ({exc})") from exc
    except (OSError, csv.Error) as exc:
        raise DatasetLayoutError(f"csv: cannot read {display_path(path)}: {exc}") from exc


def _columns(rows: list[tuple[int, list[str]]], where: str) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Column positions and the data rows (header removed if there is one)."""
    first = [f.strip().lower() for f in rows[0][1]]
    if "path" in first and "label" in first:
        cols = {name: first.index(name) for name in ("path", "label", "split") if name in first}
        return cols, rows[1:]
    width = len(rows[0][1])
    cols = {"path": 0, "label": 1}
    if width >= 3:
        cols["split"] = 2
    if width < 2:
        raise DatasetLayoutError(
            f"csv: {where} line {rows[0][0]}: expected columns path,label[,split], got {rows[0][1]}"
        )
    return cols, rows


def load_csv(
    root,
    split: str = "train",
    transform: Transform | None = None,
    *,
    string_labels: bool = False,
    train_classes: Sequence[int | str] | None = None,
    **kwargs,
) -> ImageFileDataset:
    """Images of ``split`` listed in the CSV file ``root`` (see the module docstring for the format).

    ``kwargs`` (``on_bad_image``, ``verify``) go to :class:`~smartmine.data.base.ImageFileDataset`.
    """
    check_split(split)
    if root is None:
        raise DatasetLayoutError("csv: root is required: the path of a CSV file of path,label[,split] rows")
    path = Path(root).expanduser()
    if path.is_dir():
        raise DatasetLayoutError(
            f"csv: root {display_path(path)} is a folder; expected the path of a CSV file of path,label[,split] rows"
        )
    if not path.is_file():
        raise DatasetLayoutError(f"csv: CSV file {display_path(path)} does not exist")
    where = display_path(path)
    rows = _read_rows(path)
    if not rows:
        raise DatasetLayoutError(f"csv: {where} is empty (expected path,label[,split] rows)")
    cols, data = _columns(rows, where)
    if not data:
        raise DatasetLayoutError(f"csv: {where} has a header but no rows")
    need = max(cols.values()) + 1
    base = path.parent
    seen: dict[str, int] = {}
    records: list[tuple[int, str, int | str, str | None]] = []
    for number, row in data:
        if len(row) < need or any(not row[cols[c]].strip() for c in ("path", "label")):
            raise DatasetLayoutError(
                f"csv: {where} line {number}: expected {need} columns ({', '.join(cols)}) with a path and a "
                f"label, got {row}"
            )
        rel = row[cols["path"]].strip()
        full = os.path.normpath(os.path.join(base, rel))
        if full in seen:
            raise DatasetLayoutError(f"csv: {where} line {number}: {rel!r} is already listed on line {seen[full]}")
        seen[full] = number
        text = row[cols["label"]].strip()
        label: int | str
        if string_labels:
            label = text
        else:
            try:
                label = int(text)
            except ValueError:
                raise DatasetLayoutError(
                    f"csv: {where} line {number}: label {text!r} is not an integer (pass string_labels=True to "
                    "use class names, mapped to ids in sorted order)"
                ) from None
            if label < 0:
                raise DatasetLayoutError(f"csv: {where} line {number}: label {label} is negative")
        row_split = None
        if "split" in cols:
            row_split = row[cols["split"]].strip().lower()
            if row_split not in _SPLIT_VALUES:
                raise DatasetLayoutError(
                    f"csv: {where} line {number}: split must be one of {_SPLIT_VALUES}, got {row[cols['split']]!r}"
                )
        records.append((number, full, label, row_split))

    if "split" in cols:
        chosen_rows = [r for r in records if split == "all" or r[3] == split]
        if not chosen_rows:
            raise DatasetLayoutError(f"csv: {where} has no rows with split {split!r}")
        classes = sorted({r[2] for r in chosen_rows})
    else:
        classes = first_half_split([r[2] for r in records], split, train_classes)
        wanted = set(classes)
        chosen_rows = [r for r in records if r[2] in wanted]
    index = {c: k for k, c in enumerate(classes)}
    return ImageFileDataset(
        [r[1] for r in chosen_rows],
        [index[r[2]] for r in chosen_rows],
        [str(c) for c in classes],
        transform,
        sources=[f"{where} line {r[0]}" for r in chosen_rows],
        name="csv",
        split=split,
        **kwargs,
    )
