"""The inference subcommands of ``smartmine``: index, search, calibrate, export, and the embed/eval helpers.

Each ``cmd_*`` takes the parsed arguments and returns an exit code; bad input raises a ``ValueError`` subclass that
``smartmine.cli.main`` prints as one line and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from smartmine.inference.errors import InferenceError


def _model(args: argparse.Namespace, run: str | None = None):
    from smartmine.inference.model import load

    return load(run or args.run, args.checkpoint, device=args.device)


def cmd_index(args: argparse.Namespace) -> int:
    from smartmine.inference.gallery import GalleryIndex

    out = Path(args.out)
    if args.add:
        if not out.is_dir():
            raise InferenceError(f"--add: {out} is not an index folder (build it first without --add)")
        gallery = GalleryIndex.load(out, model=_model(args))
        before = gallery.size
        added = gallery.add(args.images, batch_size=args.batch_size)
        gallery.save(out, overwrite=True)
        print(f"added {added} image(s) to {out} ({before} were indexed already; {gallery.size} in all)")
        return 0
    if out.exists() and not args.overwrite:
        raise InferenceError(f"{out} already exists; pass --overwrite to replace it or --add to add images to it")
    gallery = GalleryIndex.build(_model(args), args.images, index=args.index, batch_size=args.batch_size)
    gallery.save(out, overwrite=args.overwrite)
    kind = "labelled" if gallery.labels is not None else "unlabelled"
    print(f"indexed {gallery.size} {kind} image(s) into {out} ({args.index} index, {gallery.vectors.shape[1]}-d)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from smartmine.inference.gallery import GalleryIndex
    from smartmine.inference.sources import list_images

    gallery = GalleryIndex.load(args.index_dir, model=_model(args) if args.run else None)
    queries = list_images(args.queries).paths
    results = gallery.search(queries, k=args.k, threshold=args.threshold, batch_size=args.batch_size)
    if args.json:
        print(json.dumps([{"query": q, "hits": [vars(h) for h in hits]} for q, hits in
                          zip(queries, results, strict=True)], indent=1))
        return 0
    for q, hits in zip(queries, results, strict=True):
        print(q)
        for h in hits:
            label = f"  {h.label}" if h.label is not None else ""
            match = "" if h.match is None else ("  match" if h.match else "  no match")
            print(f"  {h.rank:>3}. {h.distance:.4f}  {h.path}{label}{match}")
    if gallery.threshold is None:
        print("(no match threshold: run smartmine calibrate on the run, or pass --threshold)")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from smartmine.inference.calibrate import calibrate, save_calibration

    model = _model(args)
    cal = calibrate(model, args.precision, split=args.split, max_images=args.max_images, batch_size=args.batch_size)
    path = save_calibration(model.run_dir, cal)
    print(f"threshold {cal.threshold:.4f} (Euclidean distance between embeddings): precision {cal.precision:.3f}, "
          f"recall {cal.recall:.3f} on the {cal.same_pairs} same-class and {cal.different_pairs} different-class "
          f"pairs of {cal.images} '{cal.split}' images; target precision {cal.target_precision:g}")
    print(f"wrote {path}; smartmine search now says match / no match")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from smartmine.inference.export import export_model

    res = export_model(_model(args), args.out, args.format, atol=args.atol)
    check = f"matches embed to {res.max_abs_diff:.1e}" if res.max_abs_diff is not None else f"not checked: {res.note}"
    print(f"wrote {res.path} ({res.format}; {check}) and {res.path.name}.json (input shape and preprocessing)")
    return 0


def embed_to_file(args: argparse.Namespace) -> int:
    """``smartmine embed``: a split of the run's dataset or any images, to ``.npy`` (+ side files) or one ``.npz``."""
    out = Path(args.out)
    if out.suffix not in (".npy", ".npz"):
        raise InferenceError(f"--out {out}: expected a .npy or .npz file name")
    model = _model(args)
    class_names: list[str] | None = None
    if args.images:
        from smartmine.inference.sources import list_images

        listed = list_images(args.images)
        emb = model.embed_files(listed.paths, batch_size=args.batch_size)
        paths: list[str] | None = listed.paths
        labels = None
        if listed.labels is not None:
            class_names = sorted(set(listed.labels))
            labels = np.searchsorted(np.array(class_names), np.array(listed.labels)).astype(np.int64)
    else:
        emb, dataset = model.embed_split(args.split, data=args.data, root=args.root, batch_size=args.batch_size)
        paths, labels, class_names = dataset.paths, np.asarray(dataset.labels), list(dataset.class_names)
    vectors = emb.numpy().astype(np.float32)
    written = write_embeddings(out, vectors, labels, paths, class_names)
    print(f"wrote {vectors.shape} embeddings to {', '.join(written)}")
    return 0


def write_embeddings(out: Path, vectors: np.ndarray, labels: np.ndarray | None, paths: list[str] | None,
                     class_names: list[str] | None) -> list[str]:
    """Write ``vectors`` (and what is known of labels, paths, class names); returns the files written.

    ``.npz``: one file with arrays ``embeddings``, and ``labels``, ``paths``, ``class_names`` where known.
    ``.npy``: ``FILE.npy`` plus ``FILE.labels.npy``, ``FILE.paths.json``, ``FILE.classes.json`` where known.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"embeddings": vectors}
        if labels is not None:
            arrays["labels"] = labels
        if paths is not None:
            arrays["paths"] = np.array(paths, dtype=str)
        if class_names is not None:
            arrays["class_names"] = np.array(class_names, dtype=str)
        tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
        return [f"{out} ({', '.join(arrays)})"]
    stem = out.with_suffix("")
    np.save(out, vectors)
    written = [str(out)]
    if labels is not None:
        np.save(f"{stem}.labels.npy", labels)
        written.append(f"{stem}.labels.npy")
    for suffix, value in ((".paths.json", paths), (".classes.json", class_names)):
        if value is not None:
            Path(f"{stem}{suffix}").write_text(json.dumps(value, indent=0) + "\n", encoding="utf-8")
            written.append(f"{stem}{suffix}")
    return written


def eval_query_gallery(args: argparse.Namespace) -> dict:
    """Metrics of ``smartmine eval RUN --query Q --gallery G``."""
    from smartmine.inference.query_gallery import evaluate_query_gallery

    if (args.query is None) != (args.gallery is None):
        raise InferenceError("--query and --gallery go together")
    model = _model(args, args.target)
    return evaluate_query_gallery(model, args.query, args.gallery, ks=tuple(args.ks), batch_size=args.batch_size)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--device``, ``--batch-size``: how every inference command opens and runs the model."""
    p.add_argument("--checkpoint", default="best", help="best (default; last.pt if there is no best.pt), last, or a "
                   "checkpoint file")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the run's train.device)")
    p.add_argument("--batch-size", type=int, default=256, help="embedding batch size (default 256)")


def add_commands(sub) -> None:
    """Register ``index``, ``search``, ``calibrate`` and ``export`` on the ``smartmine`` subparsers."""
    i = sub.add_parser("index", help="embed a gallery of images and save it as a searchable index folder",
                       description="Embed the images of a folder (class-per-folder or flat) or CSV and save vectors, "
                       "paths, labels and a manifest naming the run and checkpoint to an index folder (written "
                       "atomically). --add embeds only images not in the index yet.")
    i.add_argument("run", help="run folder (or checkpoint file)")
    i.add_argument("--images", required=True, help="folder, CSV (path[,label]) or image file of the gallery")
    i.add_argument("--out", required=True, help="index folder to write")
    i.add_argument("--index", default="exact", choices=("exact", "fanng", "faiss"),
                   help="neighbour index used for search (default exact)")
    i.add_argument("--add", action="store_true", help="add the images to the existing index folder --out")
    i.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    add_model_options(i)
    i.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="nearest gallery images of query images",
                       description="Print, for every query image, the nearest images of a saved index with their "
                       "Euclidean distances, classes (labelled galleries) and match / no match (calibrated runs).")
    s.add_argument("index_dir", help="index folder written by smartmine index")
    s.add_argument("queries", nargs="+", help="query image files or folders")
    s.add_argument("--k", type=int, default=5, help="results per query (default 5)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.add_argument("--threshold", type=float, default=None,
                   help="match distance (default: the run's calibration.json, if any)")
    s.add_argument("--run", default=None, help="run folder, if it moved since the index was built")
    add_model_options(s)
    s.set_defaults(func=cmd_search)

    c = sub.add_parser("calibrate", help="pick the match distance threshold for a target precision",
                       description="Embed the test split, pick the largest distance threshold whose same/different "
                       "pair precision reaches --precision, store it in RUN/calibration.json and print precision and "
                       "recall at it.")
    c.add_argument("run", help="run folder")
    c.add_argument("--precision", type=float, default=0.9, help="target precision in (0, 1] (default 0.9)")
    c.add_argument("--split", default="test", help="split to calibrate on (default test)")
    c.add_argument("--max-images", type=int, default=10_000, help="seeded random subset beyond this (default 10000)")
    add_model_options(c)
    c.set_defaults(func=cmd_calibrate)

    x = sub.add_parser("export", help="export the embedder to ONNX or TorchScript",
                       description="Write the embedder (preprocessed (B, C, H, W) images → (B, D) unit embeddings) as "
                       "ONNX or TorchScript plus FILE.json describing its input; the file is run back and must "
                       "match the trained model to --atol.")
    x.add_argument("run", help="run folder (or checkpoint file)")
    x.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx or torchscript")
    x.add_argument("--out", required=True, help="output file")
    x.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference to embed (default 1e-4)")
    add_model_options(x)
    x.set_defaults(func=cmd_export)
