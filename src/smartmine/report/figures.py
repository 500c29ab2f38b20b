"""Shared plumbing for the report's figures: Agg-rendered matplotlib figures and the :class:`Plot` record.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so building a report does not
touch the global backend or the caller's open figures and works without a display.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
"""One colour per run in comparison plots (matplotlib's tab10 order without the olive)."""


@dataclass
class Plot:
    """One rendered figure of the report."""

    key: str
    """Stable identifier, also the PNG file name stem (e.g. ``"curves_loss"``)."""
    title: str
    png: bytes
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    """What this figure could not show (e.g. a metric one of the compared runs lacks)."""


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches on an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure, tight: bool = True) -> bytes:
    """Render ``fig`` to PNG bytes (``tight``: cropped to the drawn content, which costs a second draw)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def class_colours(labels: np.ndarray) -> np.ndarray:
    """An RGBA colour per label, ``(N, 4)``: distinct hues for up to 20 classes, a cycled hue wheel beyond."""
    from matplotlib import colormaps

    uniq, inverse = np.unique(np.asarray(labels), return_inverse=True)
    if len(uniq) <= 20:
        palette = colormaps["tab20"](np.arange(len(uniq)))
    else:
        # Golden-ratio steps around the hue wheel keep neighbouring class ids far apart in colour.
        hues = (np.arange(len(uniq)) * 0.618034) % 1.0
        palette = colormaps["hsv"](hues)
    return palette[inverse.reshape(-1)]


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """``(rows, cols)`` of a panel grid holding ``n`` panels with at most ``max_cols`` columns."""
    cols = max(1, min(max_cols, n))
    return (n + cols - 1) // cols, cols
