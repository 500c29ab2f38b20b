"""Image galleries: the triplets the miner chose for fixed anchors over the epochs, and test-set retrieval results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from smartmine.index.exact import exact_knn
from smartmine.report.figures import DPI, Plot, new_figure, to_png
from smartmine.report.run_data import MinedRecord
from smartmine.report.thumbnails import ImageSource

GOOD = "#2ca02c"
BAD = "#d62728"
NEUTRAL = "#1f77b4"
TILE_PX = 72
"""Tile side in pixels (a 64-pixel thumbnail inside a 4-pixel border)."""
BORDER_PX = 4
GAP_PX = 6
GROUP_GAP_PX = 22
LABEL_PX = 18
HEADER_PX = 24
TITLE_PX = 26
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


@dataclass
class Cell:
    """One tile of a gallery: a thumbnail (or ``None``), its border colour and the text under it."""

    image: np.ndarray | None
    colour: str
    text: str
    empty: str = "no image"
    """Text drawn in place of a missing image."""


def _rgb(colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return (np.asarray(to_rgb(colour)) * 255).astype(np.uint8)


def mosaic(rows: list[list[Cell]], headers: list[tuple[int, str]], *, group: int, title: str) -> Figure:
    """Draw a grid of tiles as one image (one Axes, one ``imshow``: far cheaper than an Axes per tile).

    Args:
        rows: ``rows[r][c]`` is the tile at row ``r``, column ``c`` (all rows equally long).
        headers: ``(column, text)`` pairs written above the first row.
        group: columns per group; a wider gap separates groups (e.g. 3 for anchor/positive/negative).
        title: the figure title.
    """
    n_rows, n_cols = len(rows), len(rows[0])
    step_x, step_y = TILE_PX + GAP_PX, TILE_PX + LABEL_PX
    n_groups = (n_cols + group - 1) // group
    width = n_cols * step_x + (n_groups - 1) * GROUP_GAP_PX + GAP_PX
    height = HEADER_PX + n_rows * step_y
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    centres = np.zeros((n_rows, n_cols, 2))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            x0 = GAP_PX + c * step_x + (c // group) * GROUP_GAP_PX
            y0 = HEADER_PX + r * step_y
            canvas[y0 : y0 + TILE_PX, x0 : x0 + TILE_PX] = _rgb(cell.colour)
            inner = TILE_PX - 2 * BORDER_PX
            canvas[y0 + BORDER_PX : y0 + TILE_PX - BORDER_PX, x0 + BORDER_PX : x0 + TILE_PX - BORDER_PX] = (
                0 if cell.image is not None else 240
            )
            if cell.image is not None:
                img = cell.image if cell.image.ndim == 3 else np.repeat(cell.image[..., None], 3, axis=2)
                scale = max(1, inner // max(img.shape[:2]))  # blow small images (32-pixel glyphs) up to the tile
                if scale > 1:
                    img = img.repeat(scale, axis=0).repeat(scale, axis=1)
                h, w = min(img.shape[0], inner), min(img.shape[1], inner)
                oy, ox = y0 + BORDER_PX + (inner - h) // 2, x0 + BORDER_PX + (inner - w) // 2
                canvas[oy : oy + h, ox : ox + w] = img[:h, :w]
            centres[r, c] = (x0 + TILE_PX / 2, y0 + TILE_PX / 2)
    fig = new_figure(width / DPI, (height + TITLE_PX) / DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + TITLE_PX)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            x, y = centres[r, c]
            ax.text(x, y + TILE_PX / 2 + 2, cell.text, ha="center", va="top", fontsize=7)
            if cell.image is None:
                ax.text(x, y, cell.empty, ha="center", va="center", fontsize=7, color="0.4")
    for c, text in headers:
        ax.text(centres[0, c, 0], HEADER_PX - 6, text, ha="center", va="bottom", fontsize=9)
    fig.suptitle(title, fontsize=10, y=1.0 - 4 / (height + TITLE_PX), va="top")
    return fig


def _fmt(d: float | None) -> str:
    return "—" if d is None else f"{d:.3f}"


def _short(name: str, width: int = 16) -> str:
    """A class name that fits under a thumbnail."""
    return name if len(name) <= width else name[: width - 1] + "…"


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
    rows = []
    for anchor in anchors:
        known = labels is not None and 0 <= anchor < len(labels)
        cls = _short(images.class_name(labels[anchor])) if known else "anchor"
        row = []
        for lookup in by_epoch:
            t = lookup.get(anchor, {})
            row.append(Cell(images.thumb(anchor), NEUTRAL, cls))
            for key, dkey, colour, sign in (("positive", "d_ap", GOOD, "+"), ("negative", "d_an", BAD, "−")):
                idx = t.get(key)
                if idx is None:
                    row.append(Cell(None, "0.8", "none mined", empty="—"))
                else:
                    row.append(Cell(images.thumb(int(idx)), colour, f"d{sign} {_fmt(t.get(dkey))}"))
        rows.append(row)
    headers = [
        (3 * c + 1, f"epoch {rec.epoch}" + (f", κ={rec.kappa:.3g}" if rec.kappa is not None else ""))
        for c, rec in enumerate(records)
    ]
    strategy = records[0].strategy if records else "?"
    fig = mosaic(
        rows or [[Cell(None, "0.8", "")]],
        headers if rows else [],
        group=3,
        title=f"Triplets chosen by {strategy} mining for fixed anchors",
    )
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
    return Plot(f"triplets_{strategy}", "Mined triplets", to_png(fig, tight=False), caption.strip())


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
    queries, nbr, dist = retrieval_neighbours(emb, labels, seed=seed)
    k = nbr.shape[1]
    rows = []
    for r, q in enumerate(queries):
        row = [Cell(images.thumb(q), NEUTRAL, _short(images.class_name(labels[q])))]
        for j in range(k):
            ok = labels[nbr[r, j]] == labels[q]
            row.append(Cell(images.thumb(nbr[r, j]), GOOD if ok else BAD, f"{'✓' if ok else '✗'} {dist[r, j]:.3f}"))
        rows.append(row)
    precision = float(np.mean(labels[nbr] == labels[queries][:, None]))
    at = f" at epoch {epoch}" if epoch is not None else ""
    fig = mosaic(
        rows,
        [(j + 1, f"#{j + 1}") for j in range(k)],
        group=1,
        title=f"Unseen classes{at}: {precision:.0%} of shown neighbours correct",
    )
    caption = (
        f"Queries from {len(queries)} different test classes (never seen in training) and their {k} nearest test "
        "images by embedding distance; green: same class as the query, red: another class."
    )
    return Plot("retrieval_gallery", "Retrieval gallery", to_png(fig, tight=False), caption)


def retrieval_table(emb: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> list[list[str]]:
    """The retrieval results as table rows ``[query, class, neighbours (class, ✓/✗)...]`` (for runs without images)."""
    rows, nbr, _ = retrieval_neighbours(emb, labels, seed=seed)
    out = []
    for q, ns in zip(rows, nbr, strict=True):
        cells = [f"{int(n)} (c{int(labels[n])}) {'✓' if labels[n] == labels[q] else '✗'}" for n in ns]
        out.append([str(int(q)), f"c{int(labels[q])}", *cells])
    return out
