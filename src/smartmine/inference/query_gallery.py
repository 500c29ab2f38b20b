"""Query/gallery evaluation: every query image ranked against a separate gallery (In-Shop's protocol).

A side is a split name of the run's dataset (``query`` / ``gallery`` for In-Shop), a labelled class-per-folder tree,
or a CSV with labels. A CSV with ``is_query`` / ``is_gallery`` columns may be passed as both sides: its ``is_query``
rows are the queries and its ``is_gallery`` rows the gallery. Class names are matched across the two sides by name.
An image that is on both sides would find itself at distance 0, so such overlap is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from smartmine.inference.errors import InferenceError
from smartmine.inference.model import TrainedModel
from smartmine.inference.sources import list_images


def _side(model: TrainedModel, source: str, role: str, batch_size: int, progress: bool | None):
    """``(embeddings, class names, paths or None)`` of one side."""
    from smartmine.data.registry import get_dataset_spec

    spec = get_dataset_spec(model.config.data.name)
    if source in spec.splits and not Path(source).exists():
        emb, ds = model.embed_split(source, batch_size=batch_size, progress=progress)
        return emb, [ds.class_names[i] for i in ds.labels], getattr(ds, "paths", None)
    listed = list_images(source)
    if listed.labels is None:
        raise InferenceError(f"--{role} {source}: its images have no classes (use a class-per-folder tree or a CSV "
                             "with a label column)")
    flag = f"is_{role}"
    if flag in listed.flags:
        listed = listed.select(listed.flags[flag])
        if len(listed) == 0:
            raise InferenceError(f"--{role} {source}: no row has {flag} set")
    emb = model.embed_files(listed.paths, batch_size=batch_size, progress=progress)
    return emb, listed.labels, listed.paths


def evaluate_query_gallery(model: TrainedModel, query: str, gallery: str, *, ks: tuple[int, ...] = (1, 2, 4, 8),
                           batch_size: int = 256, progress: bool | None = None) -> dict[str, Any]:
    """Recall@K, MAP@R, R-precision and P@1 of ``query`` against ``gallery`` (see the module docstring), plus
    ``num_queries`` and ``num_gallery``. Queries whose class is absent from the gallery are left out of the
    metrics and counted in ``num_queries_without_positive``."""
    from smartmine.evaluation import retrieval_metrics

    q_emb, q_names, q_paths = _side(model, query, "query", batch_size, progress)
    g_emb, g_names, g_paths = _side(model, gallery, "gallery", batch_size, progress)
    if q_paths is not None and g_paths is not None:
        both = set(q_paths) & set(g_paths)
        if both:
            raise InferenceError(f"{len(both)} image(s) are both queries and gallery images, e.g. {sorted(both)[0]}; "
                                 "a query would find itself (mark each image as query or gallery, not both)")
    classes = {c: i for i, c in enumerate(sorted(set(q_names) | set(g_names)))}
    q_labels = np.array([classes[c] for c in q_names], dtype=np.int64)
    g_labels = np.array([classes[c] for c in g_names], dtype=np.int64)
    ks = tuple(k for k in ks if k <= len(g_labels)) or (1,)
    metrics = retrieval_metrics(q_emb, q_labels, ks, reference_embeddings=g_emb, reference_labels=g_labels,
                                compute_nmi=False, seed=model.config.seed)
    metrics["num_gallery"] = int(len(g_labels))
    return metrics
