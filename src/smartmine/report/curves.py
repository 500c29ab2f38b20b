"""Per-epoch curves from ``metrics.csv``: one run, or several runs overlaid (one colour per run).

Two figures: the training panels (loss terms, training error against its target, κ, smart triplets versus random
fill-ins, mining time as a share of the epoch, throughput) and one panel per retrieval metric. A panel that no run has
data for is left out and named in the notes; in a comparison, a run that lacks a column another run has is named too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from smartmine.report.figures import RUN_COLOURS, Plot, grid_shape, new_figure, to_png
from smartmine.report.run_data import RunData, is_retrieval_metric, metric_sort_key

MINING_PARTS = ("embed_seconds", "index_seconds", "search_seconds", "check_seconds", "selection_seconds")
LINESTYLES = ("-", "--", ":", "-.")
RUN_MARKERS = ("o", "s", "^", "D", "v", "P")


@dataclass
class Series:
    """One line: ``values[i]`` at ``epochs[i]``."""

    label: str
    epochs: np.ndarray
    values: np.ndarray


def _ratio(run: RunData, num: str, den: str) -> tuple[np.ndarray, np.ndarray]:
    """``num / den`` on the epochs where both are logged and ``den > 0``."""
    by_epoch = {float(r["epoch"]): r for r in run.metrics}
    pairs = [
        (e, float(r[num]) / float(r[den]))
        for e, r in by_epoch.items()
        if isinstance(r.get(num), float) and isinstance(r.get(den), float) and float(r[den]) > 0
    ]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    e, v = zip(*pairs, strict=True)
    return np.asarray(e), np.asarray(v)


def _series(run: RunData, keys: list[str], labels: dict[str, str] | None = None) -> list[Series]:
    out = []
    for key in keys:
        e, v = run.column(key)
        if len(e):
            out.append(Series((labels or {}).get(key, key), e, v))
    return out


# --- panels: each returns the lines of one run; ``compare`` asks for the one-line-per-run summary ----------------
def _loss(run: RunData, compare: bool) -> list[Series]:
    terms = sorted(k for k in run.columns() if k.startswith("loss_"))
    return _series(run, ["loss"] if compare else ["loss", *terms], {"loss": "total"})


def _error(run: RunData, compare: bool) -> list[Series]:
    return _series(run, ["train_error"], {"train_error": "training error"})


def _kappa(run: RunData, compare: bool) -> list[Series]:
    if compare:
        return _series(run, ["kappa"], {"kappa": "κ used"})
    # The thresholds t_a: an anchor has a valid negative iff κ < t_a; the cap keeps the planned share mineable.
    labels = {"kappa": "κ used", "kappa_cap": "κ cap (plan fills)", "t_q10": "t_a 10 %", "t_q50": "t_a median",
              "t_q90": "t_a 90 %"}  # fmt: skip
    return _series(run, list(labels), labels)


def _triplets(run: RunData, compare: bool) -> list[Series]:
    if compare:
        e, v = _mined_share(run)
        return [Series("mined share", e, v)] if len(e) else []
    return _series(
        run,
        ["mined_planned", "mined_triplets", "random_triplets", "anchors_with_negatives"],
        {
            "mined_planned": "mined (planned)",
            "mined_triplets": "smart (mined)",
            "random_triplets": "random fill-ins",
            "anchors_with_negatives": "anchors with a negative",
        },
    )


def _mined_share(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """``mined / (mined + random)`` triplets per epoch."""
    epochs, shares = [], []
    for r in run.metrics:
        mined, rand = r.get("mined_triplets"), r.get("random_triplets")
        if isinstance(mined, float) and isinstance(rand, float) and mined + rand > 0:
            epochs.append(float(r["epoch"]))
            shares.append(mined / (mined + rand))
    return np.asarray(epochs), np.asarray(shares)


def _mining_share(run: RunData, compare: bool) -> list[Series]:
    e, v = _ratio(run, "mining_seconds", "epoch_seconds")
    return [Series("mining / epoch", e, v)] if len(e) else []


def _list_recall(run: RunData, compare: bool) -> list[Series]:
    return _series(run, ["list_recall"], {"list_recall": "recall of the k-NN lists"})


def _throughput(run: RunData, compare: bool) -> list[Series]:
    return _series(run, ["images_per_second"], {"images_per_second": "images / s"})


@dataclass
class Panel:
    title: str
    ylabel: str
    lines: Callable[[RunData, bool], list[Series]]
    absent: str
    """Why a run may have no data for this panel (for the notes)."""
    log_y: bool = False


TRAINING_PANELS = (
    Panel("Loss", "loss", _loss, "no epoch finished"),
    Panel(
        "Training error vs target",
        "fraction of triplets violated",
        _error,
        "the training error is only measured when triplets carry a margin test",
    ),
    Panel("κ (adaptive mining threshold)", "κ", _kappa, "κ exists only for smart mining after the warm-up", log_y=True),
    Panel(
        "Smart triplets vs random fill-ins",
        "triplets per epoch",
        _triplets,
        "in-batch strategies (and the warm-up epochs) have no dataset-wide mined triplets",
    ),
    Panel(
        "Neighbour-list recall",
        "recall@k vs exact search (sample)",
        _list_recall,
        "measured only in mined epochs of smart mining (mining.list_recall_sample > 0)",
    ),
    Panel(
        "Mining time share", "share of the epoch", _mining_share, "in-batch strategies spend no separate mining time"
    ),
    Panel("Throughput", "training images / s", _throughput, "not logged"),
)


def _style_axes(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs, also for a 1-epoch run
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)


def _run_style(r: int, markers: bool = True) -> dict:
    """Line style of run ``r`` in a comparison. Runs whose curves coincide stay visible: earlier runs are drawn wider
    and underneath, each with its own marker, so a later run's line shows on top of an earlier one."""
    return {"color": RUN_COLOURS[r % len(RUN_COLOURS)], "linewidth": max(1.0, 3.2 - 0.8 * r),
            "marker": RUN_MARKERS[r % len(RUN_MARKERS)] if markers else None, "ms": max(3.0, 6.0 - 1.0 * r),
            "alpha": 0.85, "zorder": 2 + r}


def _plot_lines(ax: Axes, runs: list[RunData], panel: Panel) -> list[str]:
    """Draw ``panel`` for every run; returns the names of the runs without data for it."""
    compare = len(runs) > 1
    lacking = []
    for r, run in enumerate(runs):
        lines = panel.lines(run, compare)
        if not lines:
            lacking.append(run.name)
        for s, line in enumerate(lines):
            marker = "o" if len(line.epochs) <= 30 else None
            if compare:
                ax.plot(line.epochs, line.values, linestyle=LINESTYLES[s % len(LINESTYLES)], label=run.name,
                        **_run_style(r, marker is not None))
            else:
                ax.plot(line.epochs, line.values, marker=marker, ms=3, label=line.label)
    return lacking


def _decorate(ax: Axes, runs: list[RunData], panel: Panel) -> None:
    compare = len(runs) > 1
    if panel.lines is _error:
        for r, run in enumerate(runs):
            if run.config is not None and run.config.mining.strategy == "smart" and run.config.mining.adaptive:
                colour = RUN_COLOURS[r % len(RUN_COLOURS)] if compare else "k"
                ax.axhline(
                    run.config.mining.target_error,
                    color=colour,
                    linestyle=":",
                    linewidth=1,
                    label=None if compare else "target",
                )
    if panel.lines is _mining_share and not compare:
        # Stacked shares of the mining phases under the total, so the expensive phase is visible.
        run = runs[0]
        parts = [(k, _ratio(run, k, "epoch_seconds")) for k in MINING_PARTS]
        parts = [(k, ev) for k, ev in parts if len(ev[0])]
        if parts:
            epochs = np.unique(np.concatenate([ev[0] for _, ev in parts]))
            stack = [np.interp(epochs, ev[0], ev[1], left=0.0, right=0.0) for _, ev in parts]
            ax.stackplot(epochs, *stack, labels=[k.replace("_seconds", "") for k, _ in parts], alpha=0.35)
        ax.set_ylim(0, 1)
    if panel.lines is _triplets and compare:
        ax.set_ylim(0, 1)
    if panel.log_y and any(len(s.values) and (s.values > 0).all() for run in runs for s in panel.lines(run, compare)):
        ax.set_yscale("log")
        # κ usually moves within one or two decades: label 1-2-4 steps (evenly spaced on a log axis), not just the
        # powers of ten.
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 4.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def training_curves(runs: list[RunData]) -> tuple[Plot | None, list[str]]:
    """The training panels for one run (one line per series) or several (one colour per run); with notes."""
    notes: list[str] = []
    compare = len(runs) > 1
    drawable = []
    for panel in TRAINING_PANELS:
        lacking = [run.name for run in runs if not panel.lines(run, compare)]
        if len(lacking) == len(runs):
            notes.append(f"{panel.title}: not shown — no data ({panel.absent}).")
        else:
            if lacking and compare:
                notes.append(f"{panel.title}: no data for {', '.join(lacking)} ({panel.absent}).")
            drawable.append(panel)
    if not drawable:
        return None, notes
    rows, cols = grid_shape(len(drawable), 3)
    fig = new_figure(4.2 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, drawable, strict=False):
        _plot_lines(ax, runs, panel)
        _decorate(ax, runs, panel)
        ylabel = "mined share of the epoch's triplets" if compare and panel.lines is _triplets else panel.ylabel
        _style_axes(ax, panel.title, ylabel)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles, strict=True))  # one legend entry per run in a comparison
            ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    for ax in axes[len(drawable) :]:
        ax.set_visible(False)
    fig.tight_layout()
    caption = "Per-epoch training curves. " + (
        "One colour per run; dotted lines are each run's target error."
        if compare
        else "Dotted line: the target training error of the κ "
        "controller; shaded areas: the mining phases' shares of the epoch."
    )
    return Plot("curves_training", "Training curves", to_png(fig), caption, notes), notes


def retrieval_curves(runs: list[RunData]) -> tuple[Plot | None, list[str]]:
    """One panel per retrieval metric over the evaluation epochs (dashed: raw-pixel baseline, dotted: the untrained
    model, where known)."""
    notes: list[str] = []
    keys = sorted({k for run in runs for k in run.columns() if is_retrieval_metric(k)}, key=metric_sort_key)
    if not keys:
        notes.append("Retrieval metrics: not shown — no evaluation has finished yet.")
        return None, notes
    compare = len(runs) > 1
    for key in keys:
        lacking = [run.name for run in runs if not run.has(key)]
        if lacking and compare:
            notes.append(f"{key}: not recorded for {', '.join(lacking)}.")
    extra = [k for k in ("embedding_spread",) if any(run.has(k) for run in runs)]
    panels = keys + extra
    rows, cols = grid_shape(len(panels), 4)
    fig = new_figure(3.4 * cols, 2.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, panels, strict=False):
        for r, run in enumerate(runs):
            e, v = run.column(key)
            colour = RUN_COLOURS[r % len(RUN_COLOURS)]
            if len(e):
                style = _run_style(r) if compare else {"marker": "o", "ms": 3, "color": colour}
                ax.plot(e, v, label=run.name if compare else "model", **style)
            for ref, linestyle, name in ((run.baseline, "--", "raw pixels"), (run.untrained, ":", "untrained")):
                if ref and key in ref:
                    ax.axhline(ref[key], color=colour, linestyle=linestyle, linewidth=1,
                               label=None if compare else name)  # fmt: skip
        _style_axes(ax, key if key != "embedding_spread" else "embedding spread (Σ std)", key)
        if key != "embedding_spread":
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(0.0, lo), min(1.0, hi) if hi <= 1.0 else hi)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    lines = [text for text, shown in (("dashed: the raw-pixel baseline", any(run.baseline for run in runs)),
                                      ("dotted: the model before training", any(run.untrained for run in runs)))
             if shown]  # fmt: skip
    caption = "Test-set retrieval metrics (classes never seen in training) at each evaluation epoch" + (
        "; " + "; ".join(lines) + "." if lines else "."
    )
    return Plot("curves_retrieval", "Retrieval metrics", to_png(fig), caption, notes), notes
