"""Views of the saved test embeddings: a 2-D map (t-SNE or UMAP) and positive/negative pair-distance histograms."""

from __future__ import annotations

import numpy as np
import torch

from smartmine.distances import pairwise_distances
from smartmine.report.figures import Plot, class_colours, new_figure, to_png
from smartmine.report.thumbnails import ImageSource

MAX_MAP_POINTS = 2000
"""The map embeds at most this many test points (Barnes-Hut t-SNE is ~O(N log N) but still seconds per thousand)."""
MAX_HIST_POINTS = 2000
"""Pair histograms use at most this many test points (≈ 2 M pairs)."""
MAP_THUMBNAILS = 120
"""Thumbnails drawn on the map when asked for (more hide the points)."""


def subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, limit)`` rows drawn without replacement with ``seed`` (all rows if ``n <= limit``)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates ``(N, 2)`` of ``x`` ``(N, D)`` and the name of the method used.

    Args:
        method: ``"tsne"`` (scikit-learn's Barnes-Hut t-SNE, PCA initialisation), ``"umap"`` (needs ``umap-learn``),
            or ``"auto"`` (default: UMAP if installed, else t-SNE).
        seed: random state of either method.
    """
    if method not in ("auto", "tsne", "umap"):
        raise ValueError(f"map_method: expected 'auto', 'tsne' or 'umap', got {method!r}")
    n = x.shape[0]
    if n < 3:
        return np.zeros((n, 2)), "none"
    if method == "umap" or (method == "auto" and umap_available()):
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
        return np.asarray(reducer.fit_transform(x)), "UMAP"
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    # Perplexity must stay below N; 30 is the usual value for a few thousand points.
    tsne = TSNE(
        n_components=2,
        perplexity=float(min(30.0, (n - 1) / 3)),
        init="pca",
        method="barnes_hut",
        random_state=seed,
        max_iter=500,
    )
    # One OpenMP thread: with torch's OpenMP runtime loaded in the same process, scikit-learn's multi-threaded
    # Barnes-Hut gradient spins and runs ~40x slower (measured: 200 points, 21 s vs 0.5 s of CPU).
    with threadpool_limits(limits=1, user_api="openmp"):
        return np.asarray(tsne.fit_transform(x.astype(np.float32))), "Barnes-Hut t-SNE"


LEGEND_CLASSES = 20
"""Classes named in the map's legend at most (beyond this the colours repeat and a legend would not help)."""


def embedding_map(
    emb: np.ndarray,
    labels: np.ndarray,
    *,
    epoch: int | None,
    method: str = "auto",
    seed: int = 0,
    max_points: int = MAX_MAP_POINTS,
    images: ImageSource | None = None,
    class_names: list[str] | None = None,
) -> Plot:
    """Scatter of the 2-D projection of ``emb`` ``(N, D)`` coloured by ``labels`` ``(N,)``; thumbnails if ``images``;
    a legend naming the classes (``class_names[label]``, else ``class <label>``) for up to 20 classes."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    rows = subsample(emb.shape[0], max_points, seed)
    xy, used = project_2d(emb[rows], method, seed)
    fig = new_figure(8.0, 7.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(xy[:, 0], xy[:, 1], c=class_colours(labels[rows]), s=6, linewidths=0)
    notes = []
    if images is not None:
        if len(images) != emb.shape[0]:
            notes.append(
                f"Thumbnails left out: the dataset now has {len(images)} test images but {emb.shape[0]} "
                "embeddings were saved."
            )
        else:
            pick = subsample(len(rows), MAP_THUMBNAILS, seed + 1)
            cmap = "gray" if images.grayscale else None
            for j in pick:
                thumb = images.thumb(int(rows[j]))
                if thumb is None:
                    continue
                box = OffsetImage(thumb, zoom=24.0 / max(thumb.shape[:2]), cmap=cmap)
                ax.add_artist(AnnotationBbox(box, xy[j], frameon=False, pad=0.0))
    ax.set_xticks([])
    ax.set_yticks([])
    classes = np.unique(labels[rows])
    if len(classes) <= LEGEND_CLASSES:
        from matplotlib.lines import Line2D

        # class_colours gives the i-th sorted class the i-th colour, as in the scatter above
        colours = class_colours(classes)
        names = [str(class_names[c]) if class_names is not None and c < len(class_names) else f"class {int(c)}"
                 for c in classes]
        handles = [Line2D([], [], marker="o", linestyle="", color=colours[i], label=n) for i, n in enumerate(names)]
        ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    n_cls = len(classes)
    at = f" at epoch {epoch}" if epoch is not None else ""
    ax.set_title(f"Test embeddings{at}: {used}, {len(rows)} points, {n_cls} classes", fontsize=10)
    fig.tight_layout()
    sub = f" (a random {len(rows)} of {emb.shape[0]})" if len(rows) < emb.shape[0] else ""
    caption = (
        f"2-D {used} map of the test embeddings{sub}{at}, one colour per class. Test classes were never seen "
        "in training; tight, separated clusters mean the embedding generalises."
    )
    return Plot("embedding_map", "Embedding map", to_png(fig), caption, notes)


def pair_distances(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of all positive and all negative pairs ``i < j`` (two 1-D float arrays)."""
    d = pairwise_distances(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)), eps=0.0).numpy()
    iu, ju = np.triu_indices(emb.shape[0], k=1)
    same = labels[iu] == labels[ju]
    dist = d[iu, ju]
    return dist[same], dist[~same]


def distance_histograms(
    snapshots: list[tuple[str, np.ndarray]], labels: np.ndarray, *, seed: int = 0, max_points: int = MAX_HIST_POINTS
) -> Plot:
    """Histograms of positive and negative test-pair distances, one panel per ``(title, (N, D) embeddings)``."""
    rows = subsample(labels.shape[0], max_points, seed)
    lab = labels[rows]
    fig = new_figure(5.0 * len(snapshots), 3.4)
    axes = fig.subplots(1, len(snapshots), squeeze=False).ravel()
    stats = []
    dists = [pair_distances(emb[rows], lab) for _, emb in snapshots]
    top = max([float(np.max(np.concatenate([p, n]))) for p, n in dists if p.size + n.size] + [1e-6])
    bins = np.linspace(0.0, top * 1.02, 60)
    for ax, (title, _), (pos, neg) in zip(axes, snapshots, dists, strict=True):
        if neg.size:
            ax.hist(neg, bins=bins, density=True, alpha=0.55, color="#d62728", label=f"negative pairs ({neg.size})")
        if pos.size:
            ax.hist(pos, bins=bins, density=True, alpha=0.55, color="#2ca02c", label=f"positive pairs ({pos.size})")
        # Overlap: how often a random negative pair is closer than a random positive pair (what the global loss
        # drives down by pulling the two distributions' means apart and shrinking their variances).
        overlap = _prob_neg_closer(pos, neg)
        stats.append(overlap)
        ax.set_title(f"{title}: P(d⁻ < d⁺) = {overlap:.3f}" if np.isfinite(overlap) else title, fontsize=10)
        ax.set_xlabel("Euclidean distance", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    sub = f" (a random {len(rows)} of {labels.shape[0]} test images)" if len(rows) < labels.shape[0] else ""
    caption = (
        "Distances between test embeddings of the same class (positive pairs, green) and of different classes "
        f"(negative pairs, red){sub}. The global loss acts on these two distributions: it pushes their means "
        "apart and narrows them. P(d⁻ < d⁺) is the chance that a random negative pair is closer than a random "
        "positive pair."
    )
    return Plot("distance_histograms", "Pair-distance histograms", to_png(fig), caption)


def _prob_neg_closer(pos: np.ndarray, neg: np.ndarray, limit: int = 200_000, seed: int = 0) -> float:
    """P(d⁻ < d⁺) for independent random pairs, from sorted samples (``nan`` if either set is empty)."""
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    p = pos if pos.size <= limit else rng.choice(pos, limit, replace=False)
    n = np.sort(neg if neg.size <= limit else rng.choice(neg, limit, replace=False))
    return float(np.searchsorted(n, p, side="left").sum() / (p.size * n.size))
