"""Image galleries: the triplets the miner chose for fixed anchors over the epochs, and test-set retrieval results."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from smartmine.index.exact import exact_knn
from smartmine.report.figures import Plot, new_figure, to_png
from smartmine.report.run_data import MinedRecord
from smartmine.report.thumbnails import ImageSource

GOOD = "#2ca02c"
BAD = "#d62728"
NEUTRAL = "#1f77b4"
TILE = 0.95
"""Inches per thumbnail tile."""
RETRIEVAL_QUERIES = 8
RETRIEVAL_K = 5


def pick_epochs(available: Sequence[int], count: int = 4) -> list[int]:
    """Up to ``count`` epochs spread evenly over ``available`` (sorted), always ending with the last one.

    With 16 recorded epochs 1..16 this gives 4, 8, 12, 16 — the epochs the Smart Mining paper shows.
    """
    epochs = sorted(set(int(e) for e in available))
    if len(epochs) <= count:
        return epochs
    step = len(epochs) / count
    return [epochs[int(round(step * (i + 1))) - 1] for i in range(count)]


def _tile(ax: Axes, image: np.ndarray | None, colour: str, text: str, grayscale: bool, empty: str = "no image") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=7, color="0.4", transform=ax.transAxes)
    else:
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.5)
    ax.set_xlabel(text, fontsize=7, labelpad=2)


def _fmt(d: float | None) -> str:
    return "—" if d is None else f"{d:.3f}"


def triplet_gallery(records: list[MinedRecord], images: ImageSource, labels: np.ndarray | None = None) -> Plot:
    """Rows: the fixed anchors; per chosen epoch three columns: anchor, positive (green), negative (red).

    Args:
        records: the ``mined/epoch_NNN.json`` records to show, in epoch order.
        images: the training split's thumbnails (row indices of the records index into it).
        labels: training labels ``(N,)``, to print each image's class (optional).
    """
    anchors: list[int] = []
    for rec in records:
        for t in rec.triplets:
            if int(t["anchor"]) not in anchors:
                anchors.append(int(t["anchor"]))
    by_epoch = [{int(t["anchor"]): t for t in rec.triplets} for rec in records]
    n_rows, n_cols = max(1, len(anchors)), 3 * len(records)
    fig = new_figure(TILE * n_cols + 0.3 * (len(records) - 1), (TILE + 0.35) * n_rows + 0.5)
    height = (TILE + 0.35) * n_rows + 0.5
    grid = fig.add_gridspec(n_rows, n_cols, wspace=0.08, hspace=0.45, top=1 - 0.45 / height, bottom=0.2 / height)
    for c, (rec, lookup) in enumerate(zip(records, by_epoch, strict=True)):
        for r, anchor in enumerate(anchors):
            t = lookup.get(anchor, {"anchor": anchor, "positive": None, "negative": None, "d_ap": None, "d_an": None})
            cells = [
                (anchor, NEUTRAL, "anchor"),
                (t.get("positive"), GOOD, f"d+ {_fmt(t.get('d_ap'))}"),
                (t.get("negative"), BAD, f"d− {_fmt(t.get('d_an'))}"),
            ]
            for j, (idx, colour, text) in enumerate(cells):
                ax = fig.add_subplot(grid[r, 3 * c + j])
                if idx is None:
                    _tile(ax, None, "0.8", "none mined", images.grayscale, empty="—")
                    continue
                cls = f" · c{int(labels[idx])}" if labels is not None and 0 <= idx < len(labels) else ""
                _tile(ax, images.thumb(idx), colour, text + (cls if j == 0 else ""), images.grayscale)
                if r == 0 and j == 1:
                    kappa = f", κ={rec.kappa:.3g}" if rec.kappa is not None else ""
                    ax.set_title(f"epoch {rec.epoch}{kappa}", fontsize=9, pad=6)
    strategy = records[0].strategy if records else "?"
    fig.suptitle(f"Triplets chosen by {strategy} mining for fixed anchors", fontsize=11)
    epochs = ", ".join(str(r.epoch) for r in records)
    caption = (
        f"For the same training anchors (rows) at epochs {epochs}: the anchor (blue), the positive (green, "
        "distance d+) and the negative (red, distance d−) the miner chose. "
        + (
            "Smart mining picks negatives that lie within κ times the anchor's nearest-positive distance; as κ "
            "shrinks the negatives get harder."
            if strategy == "smart"
            else "Distance-weighted sampling draws negatives in proportion to the inverse density of distances on "
            "the sphere, so it picks a spread of easy and hard negatives."
            if strategy == "distance_weighted"
            else ""
        )
    )
    return Plot(f"triplets_{strategy}", "Mined triplets", to_png(fig), caption.strip())


def triplet_table(records: list[MinedRecord]) -> list[list[str]]:
    """The mined triplets as table rows ``[epoch, anchor, positive, negative, d+, d−]`` (for runs without images)."""
    rows = []
    for rec in records:
        for t in rec.triplets:
            rows.append(
                [
                    str(rec.epoch),
                    str(t["anchor"]),
                    "—" if t.get("positive") is None else str(t["positive"]),
                    "—" if t.get("negative") is None else str(t["negative"]),
                    _fmt(t.get("d_ap")),
                    _fmt(t.get("d_an")),
                ]
            )
    return rows


def retrieval_neighbours(
    emb: np.ndarray, labels: np.ndarray, *, queries: int = RETRIEVAL_QUERIES, k: int = RETRIEVAL_K, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries from distinct test classes (fixed by ``seed``) with their ``k`` nearest other test images.

    Returns:
        ``(query_rows (Q,), neighbour_rows (Q, k), distances (Q, k))``; ``k`` shrinks to ``N - 1`` if needed.
    """
    n = emb.shape[0]
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    chosen = rng.choice(classes, size=min(queries, len(classes)), replace=False)
    rows = np.array([rng.choice(np.flatnonzero(labels == c)) for c in np.sort(chosen)], dtype=np.int64)
    # Exact search over the whole test set; the query's own row is dropped by index.
    sq, idx = exact_knn(emb[rows], emb, k + 1)
    sq, idx = sq.numpy(), idx.numpy()
    keep = idx != rows[:, None]
    nbr = np.stack([i[m][:k] for i, m in zip(idx, keep, strict=True)])
    dist = np.sqrt(np.stack([d[m][:k] for d, m in zip(sq, keep, strict=True)]))
    return rows, nbr, dist


def retrieval_gallery(
    emb: np.ndarray, labels: np.ndarray, images: ImageSource, *, epoch: int | None, seed: int = 0
) -> Plot:
    """Queries (left) and their top-k neighbours among the test images; green border: same class, red: not."""
    rows, nbr, dist = retrieval_neighbours(emb, labels, seed=seed)
    k = nbr.shape[1]
    height = (TILE + 0.35) * len(rows) + 0.5
    fig = new_figure(TILE * (k + 1) + 0.4, height)
    grid = fig.add_gridspec(len(rows), k + 1, wspace=0.08, hspace=0.45, top=1 - 0.45 / height, bottom=0.2 / height)
    for r, q in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        _tile(ax, images.thumb(q), NEUTRAL, f"query · c{int(labels[q])}", images.grayscale)
        ax.add_patch(Rectangle((1.02, 0.0), 0.04, 1.0, transform=ax.transAxes, color="0.3", clip_on=False))
        for j in range(k):
            ok = labels[nbr[r, j]] == labels[q]
            ax = fig.add_subplot(grid[r, j + 1])
            _tile(
                ax,
                images.thumb(nbr[r, j]),
                GOOD if ok else BAD,
                f"{'✓' if ok else '✗'} {dist[r, j]:.3f}",
                images.grayscale,
            )
            if r == 0:
                ax.set_title(f"#{j + 1}", fontsize=9)
    precision = float(np.mean(labels[nbr] == labels[rows][:, None]))
    at = f" at epoch {epoch}" if epoch is not None else ""
    fig.suptitle(f"Unseen classes{at}: {precision:.0%} of shown neighbours correct", fontsize=10)
    caption = (
        f"Queries from {len(rows)} different test classes (never seen in training) and their {k} nearest test "
        "images by embedding distance; green: same class as the query, red: another class."
    )
    return Plot("retrieval_gallery", "Retrieval gallery", to_png(fig), caption)


def retrieval_table(emb: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> list[list[str]]:
    """The retrieval results as table rows ``[query, class, neighbours (class, ✓/✗)...]`` (for runs without images)."""
    rows, nbr, _ = retrieval_neighbours(emb, labels, seed=seed)
    out = []
    for q, ns in zip(rows, nbr, strict=True):
        cells = [f"{int(n)} (c{int(labels[n])}) {'✓' if labels[n] == labels[q] else '✗'}" for n in ns]
        out.append([str(int(q)), f"c{int(labels[q])}", *cells])
    return out
