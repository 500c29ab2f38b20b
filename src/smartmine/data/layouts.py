"""Readers for the benchmarks' official on-disk layouts (the user downloads the data; we only read it).

=========  ==========================================================================  ===========================
name       expected under ``root``                                                      class-disjoint split
=========  ==========================================================================  ===========================
cub100     ``images.txt``, ``image_class_labels.txt``, ``classes.txt`` ("id, value"     classes 0-49 / 50-99
           lines), ``images/``; ``train_test_split.txt`` is ignored
cub200     ``CUB_200_2011/`` (or ``root`` itself) with ``images.txt``,                  classes 1-100 / 101-200
           ``image_class_labels.txt``, ``classes.txt``, ``images/``
cars196    ``cars_annos.mat`` and the ``car_ims/`` folder it refers to                  classes 1-98 / 99-196
sop        ``Stanford_Online_Products/`` (or ``root``) with ``Ebay_train.txt``,         the two lists
           ``Ebay_test.txt`` and the image folders
inshop     ``list_eval_partition.txt`` (or ``Eval/list_eval_partition.txt``) and the   train / query / gallery
           ``img/`` folder (or ``Img/img/``)
=========  ==========================================================================  ===========================

The CUB and Cars splits are "the first half of the sorted class ids" (:func:`smartmine.data.splits.first_half_split`),
which gives the conventional split on the full data and a sensible one on subsets. Every image path is checked at
construction (``verify`` level ``"exists"`` by default), and errors name the listing file and line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smartmine.data.base import DatasetLayoutError, ImageFileDataset, Transform
from smartmine.data.images import display_path
from smartmine.data.splits import check_split, first_half_split


def _require_root(root: str | os.PathLike | None, name: str, expected: str) -> Path:
    if root is None:
        raise DatasetLayoutError(f"{name}: root is required: the folder that contains {expected}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(f"{name}: dataset root {display_path(path)} does not exist (expected {expected})")
    return path


def _find_base(root: Path, name: str, marker: str, subfolders: tuple[str, ...], how: str) -> Path:
    """The first of ``root``, ``root/<sub>`` ... that contains the file ``marker``."""
    for base in (root, *(root / s for s in subfolders)):
        if (base / marker).is_file():
            return base
    tried = ", ".join(display_path(b / marker) for b in (root, *(root / s for s in subfolders)))
    raise DatasetLayoutError(f"{name}: wrong layout under {display_path(root)}: none of {tried} exists ({how})")


def read_listing(path: Path, columns: int, name: str, *, skip: int = 0) -> list[tuple[int, list[str]]]:
    """Parse a whitespace- or comma-separated listing into ``(line_number, fields)`` pairs.

    The last field takes the rest of the line (so it may contain separators); blank lines are ignored; a line with
    fewer than ``columns`` fields raises :class:`DatasetLayoutError` naming the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"{name}: cannot read {display_path(path)}: {exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if number <= skip or not line.strip():
            continue
        if "," in line:
            fields = [f.strip() for f in line.split(",", columns - 1)]
        else:
            fields = line.split(None, columns - 1)
        if len(fields) < columns or any(f == "" for f in fields):
            raise DatasetLayoutError(
                f"{name}: {display_path(path)} line {number}: expected {columns} fields, got {line.strip()!r}"
            )
        rows.append((number, fields))
    return rows


def _int_field(value: str, path: Path, number: int, what: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetLayoutError(
            f"{name}: {display_path(path)} line {number}: {what} must be an integer, got {value!r}"
        ) from None


def _cub_like(base: Path, split: str, transform: Transform | None, name: str, **kwargs) -> ImageFileDataset:
    """CUB-style listings: images.txt (id path), image_class_labels.txt (id class), classes.txt (class name)."""
    images_txt, labels_txt, classes_txt = (base / f for f in ("images.txt", "image_class_labels.txt", "classes.txt"))
    if not labels_txt.is_file():
        raise DatasetLayoutError(f"{name}: wrong layout: {display_path(labels_txt)} is missing (next to images.txt)")
    images = {}
    for number, (image_id, rel) in read_listing(images_txt, 2, name):
        if image_id in images:
            raise DatasetLayoutError(f"{name}: {display_path(images_txt)} line {number}: duplicate image id {image_id}")
        images[image_id] = (number, rel)
    labels = {}
    for number, (image_id, cls) in read_listing(labels_txt, 2, name):
        labels[image_id] = _int_field(cls, labels_txt, number, "class id", name)
    names: dict[int, str] = {}
    if classes_txt.is_file():
        for number, (cls, cname) in read_listing(classes_txt, 2, name):
            names[_int_field(cls, classes_txt, number, "class id", name)] = cname
    missing = [i for i in images if i not in labels]
    if missing:
        raise DatasetLayoutError(
            f"{name}: image id {missing[0]} (images.txt line {images[missing[0]][0]}) has no class in "
            f"{display_path(labels_txt)} ({len(missing)} such image(s))"
        )
    class_ids = sorted(set(labels.values()))
    chosen = first_half_split(class_ids, split)
    index = {c: k for k, c in enumerate(chosen)}
    paths, targets, sources = [], [], []
    for image_id, (number, rel) in images.items():
        cls = labels[image_id]
        if cls in index:
            paths.append(str(base / "images" / rel))
            targets.append(index[cls])
            sources.append(f"{display_path(images_txt)} line {number}")
    class_names = [names.get(c, str(c)) for c in chosen]
    return ImageFileDataset(paths, targets, class_names, transform, sources=sources, name=name, split=split, **kwargs)


def load_cub100(root, split: str = "train", transform: Transform | None = None, **kwargs) -> ImageFileDataset:
    """The ``cub100`` subset of CUB-200-2011 (``../shared/data/cub100``): classes 0-49 train, 50-99 test."""
    check_split(split)
    expected = "images.txt, image_class_labels.txt, classes.txt and images/ (the cub100 layout)"
    base = _require_root(root, "cub100", expected)
    base = _find_base(base, "cub100", "images.txt", (), f"expected {expected}")
    return _cub_like(base, split, transform, "cub100", **kwargs)


def load_cub200(root, split: str = "train", transform: Transform | None = None, **kwargs) -> ImageFileDataset:
    """CUB-200-2011 from its official archive (``CUB_200_2011.tgz`` extracted): classes 1-100 train, 101-200 test."""
    check_split(split)
    expected = "CUB_200_2011/images.txt (the extracted CUB_200_2011.tgz)"
    base = _require_root(root, "cub200", expected)
    base = _find_base(base, "cub200", "images.txt", ("CUB_200_2011",), f"expected {expected}")
    return _cub_like(base, split, transform, "cub200", **kwargs)


def _mat_str(value) -> str:
    arr = np.asarray(value)
    return str(arr.reshape(-1)[0]) if arr.size else ""


def load_cars196(root, split: str = "train", transform: Transform | None = None, **kwargs) -> ImageFileDataset:
    """Stanford Cars (Cars196) from ``cars_annos.mat`` (read with ``scipy.io.loadmat``) and ``car_ims/``:
    classes 1-98 train, 99-196 test (the annotation's own ``test`` flag is ignored: the split is by class)."""
    check_split(split)
    name = "cars196"
    expected = "cars_annos.mat and car_ims/ (the Stanford Cars 'all images' download)"
    base = _require_root(root, name, expected)
    base = _find_base(base, name, "cars_annos.mat", ("stanford_cars", "cars196"), f"expected {expected}")
    mat_path = base / "cars_annos.mat"
    from scipy.io import loadmat

    try:
        mat = loadmat(str(mat_path), squeeze_me=True)
        annos = np.atleast_1d(mat["annotations"])
        rel_paths = [_mat_str(a) for a in annos["relative_im_path"]]
        classes = [int(np.asarray(c).reshape(-1)[0]) for c in annos["class"]]
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for malformed files
        raise DatasetLayoutError(
            f"{name}: {display_path(mat_path)} is not a readable Cars196 annotation file with an 'annotations' "
            f"struct array (fields relative_im_path, class): {type(exc).__name__}: {exc}"
        ) from exc
    raw_names = np.atleast_1d(mat.get("class_names", np.array([], dtype=object)))
    names = {k + 1: _mat_str(n) for k, n in enumerate(raw_names)}
    chosen = first_half_split(sorted(set(classes)), split)
    index = {c: k for k, c in enumerate(chosen)}
    rows = [(i, r, index[c]) for i, (r, c) in enumerate(zip(rel_paths, classes, strict=True)) if c in index]
    return ImageFileDataset(
        [str(base / r) for _, r, _ in rows],
        [t for _, _, t in rows],
        [names.get(c, str(c)) for c in chosen],
        transform,
        sources=[f"{display_path(mat_path)} annotation {i + 1}" for i, _, _ in rows],
        name=name,
        split=split,
        **kwargs,
    )


def load_sop(root, split: str = "train", transform: Transform | None = None, **kwargs) -> ImageFileDataset:
    """Stanford Online Products: ``Ebay_train.txt`` (11,318 classes) / ``Ebay_test.txt`` (11,316 classes).

    Each list has a header line ``image_id class_id super_class_id path``. Class names are
    ``"<super-class folder>/<class_id>"``. ``split="all"`` concatenates both lists.
    """
    check_split(split)
    name = "sop"
    expected = "Stanford_Online_Products/Ebay_train.txt and Ebay_test.txt"
    base = _require_root(root, name, expected)
    base = _find_base(base, name, "Ebay_train.txt", ("Stanford_Online_Products",), f"expected {expected}")
    lists = {"train": ["Ebay_train.txt"], "test": ["Ebay_test.txt"], "all": ["Ebay_train.txt", "Ebay_test.txt"]}
    rows = []
    for list_name in lists[split]:
        listing = base / list_name
        if not listing.is_file():
            raise DatasetLayoutError(f"{name}: wrong layout: {display_path(listing)} is missing")
        for number, (_, cls, _, rel) in read_listing(listing, 4, name, skip=1):
            class_id = _int_field(cls, listing, number, "class_id", name)
            rows.append((rel, class_id, f"{display_path(listing)} line {number}"))
    class_ids = sorted({c for _, c, _ in rows})
    index = {c: k for k, c in enumerate(class_ids)}
    folder = {c: rel.split("/", 1)[0] for rel, c, _ in rows}
    return ImageFileDataset(
        [str(base / rel) for rel, _, _ in rows],
        [index[c] for _, c, _ in rows],
        [f"{folder[c]}/{c}" for c in class_ids],
        transform,
        sources=[s for _, _, s in rows],
        name=name,
        split=split,
        **kwargs,
    )


INSHOP_SPLITS: tuple[str, ...] = ("train", "test", "query", "gallery", "all")


def load_inshop(root, split: str = "train", transform: Transform | None = None, **kwargs) -> ImageFileDataset:
    """DeepFashion In-Shop Clothes Retrieval from ``list_eval_partition.txt``.

    ``split``: ``"train"`` (3,997 items), ``"query"`` or ``"gallery"`` (the 3,985 test items), ``"test"`` (query
    then gallery, with ``sample_info["is_query"]``), ``"all"``. Query, gallery and test share one class numbering
    (all test items in sorted order), so query labels can be compared with gallery labels directly.
    """
    check_split(split, INSHOP_SPLITS)
    name = "inshop"
    expected = "list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/ (or Img/img/)"
    root_path = _require_root(root, name, expected)
    listing_base = _find_base(root_path, name, "list_eval_partition.txt", ("Eval",), f"expected {expected}")
    listing = listing_base / "list_eval_partition.txt"
    # line 1: number of images, line 2: column names
    entries = read_listing(listing, 3, name, skip=2)
    if not entries:
        raise DatasetLayoutError(f"{name}: {display_path(listing)} lists no images")
    image_base = _find_base(root_path, name, entries[0][1][0], ("Img",), f"image paths start with {entries[0][1][0]}")
    status_of = {"train": ("train",), "query": ("query",), "gallery": ("gallery",), "test": ("query", "gallery")}
    wanted = status_of.get(split, ("train", "query", "gallery"))
    for number, (_, _, status) in entries:
        if status not in ("train", "query", "gallery"):
            raise DatasetLayoutError(
                f"{name}: {display_path(listing)} line {number}: evaluation_status must be train, query or "
                f"gallery, got {status!r}"
            )
    # one numbering for every split drawn from the same item set, so query and gallery labels agree
    pool = ("train",) if split == "train" else ("query", "gallery") if split != "all" else wanted
    class_ids = sorted({item for _, (_, item, status) in entries if status in pool})
    index = {c: k for k, c in enumerate(class_ids)}
    order = sorted(
        (e for e in entries if e[1][2] in wanted), key=lambda e: wanted.index(e[1][2])
    )  # stable: query rows before gallery rows for "test"
    return ImageFileDataset(
        [str(image_base / rel) for _, (rel, _, _) in order],
        [index[item] for _, (_, item, _) in order],
        class_ids,
        transform,
        sources=[f"{display_path(listing)} line {number}" for number, _ in order],
        name=name,
        split=split,
        sample_info={"is_query": np.array([s == "query" for _, (_, _, s) in order], dtype=bool)},
        remap=split in ("train", "all"),
        **kwargs,
    )


LAYOUT_LOADERS: dict[str, Callable[..., ImageFileDataset]] = {
    "cub100": load_cub100,
    "cub200": load_cub200,
    "cars196": load_cars196,
    "sop": load_sop,
    "inshop": load_inshop,
}
