"""``build_report``: turn one run folder (or several, for a comparison) into a self-contained ``report.html``."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from smartmine._atomic import atomic_write_bytes
from smartmine.reference_columns import reference_columns
from smartmine.report import curves, embedding_views, galleries
from smartmine.report.figures import Plot
from smartmine.report.html import ImageWriter, Section, Table, escape, render_page
from smartmine.report.run_data import RunData, load_run, metric_sort_key
from smartmine.report.thumbnails import ImageSource, open_images
from smartmine.run_folder import REPORT as REPORT_NAME

logger = logging.getLogger(__name__)

COMPARISON_NAME = "comparison.html"


def default_output(runs: Sequence[Path]) -> Path:
    """``RUN/report.html`` for one run; ``<common parent of the runs>/comparison.html`` for several."""
    if len(runs) == 1:
        return Path(runs[0]) / REPORT_NAME
    parent = Path(os.path.commonpath([str(Path(r).resolve()) for r in runs]))
    if parent in {Path(r).resolve() for r in runs}:  # one run nested in another: stay outside both
        parent = parent.parent
    return parent / COMPARISON_NAME


def build_report(
    runs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    thumbnails: bool = False,
    embed_images: bool = True,
    triplet_epochs: Sequence[int] | None = None,
    map_method: str = "auto",
    max_map_points: int = embedding_views.MAX_MAP_POINTS,
    seed: int = 0,
) -> Path:
    """Write the HTML report of one run, or a comparison of several, and return its path.

    Args:
        runs: run folders written by ``smartmine train`` (one or more; each may be unfinished or incomplete — what is
            missing is stated in the report).
        out: the HTML file to write (default: ``RUN/report.html`` for one run, ``<common parent>/comparison.html``
            for several).
        thumbnails: draw image thumbnails on the embedding map (default ``False``: slower, busier).
        embed_images: embed the figures as base64 data URIs (default ``True``: one self-contained file); ``False``
            writes PNGs into ``<out stem>_files/`` beside the HTML.
        triplet_epochs: epochs of the mined-triplet gallery (default: up to 4 spread over the recorded epochs,
            ending with the last, as the Smart Mining paper's 4/8/12/16).
        map_method: ``"auto"`` (UMAP if installed, else Barnes-Hut t-SNE), ``"tsne"`` or ``"umap"``.
        max_map_points: test points on the embedding map (a fixed random subset above this; default 2000).
        seed: seed of every random choice (subsets, queries, t-SNE).

    Raises:
        ValueError: no runs, a run that is not a folder, or an invalid option.
    """
    paths = [Path(r) for r in runs]
    if not paths:
        raise ValueError("runs: expected at least one run folder")
    if map_method not in ("auto", "tsne", "umap"):
        raise ValueError(f"map_method: expected 'auto', 'tsne' or 'umap', got {map_method!r}")
    if map_method == "umap" and not embedding_views.umap_available():
        raise ValueError("map_method: 'umap' needs the umap-learn package (pip install umap-learn)")
    if isinstance(max_map_points, bool) or not isinstance(max_map_points, int) or max_map_points < 3:
        raise ValueError(f"max_map_points: expected an integer >= 3, got {max_map_points!r}")
    if triplet_epochs is not None:
        triplet_epochs = [int(e) for e in triplet_epochs]
    data = [load_run(p) for p in paths]
    target = Path(out) if out is not None else default_output(paths)
    t0 = time.perf_counter()
    options = {
        "thumbnails": thumbnails,
        "triplet_epochs": triplet_epochs,
        "map_method": map_method,
        "max_map_points": max_map_points,
        "seed": seed,
    }
    if len(data) == 1:
        title, subtitle, sections, missing = _single_report(data[0], **options)
    else:
        title, subtitle, sections, missing = _comparison_report(data, target)
    writer = ImageWriter(target, embed_images)
    target.parent.mkdir(parents=True, exist_ok=True)
    page = render_page(title, subtitle + f" · built in {time.perf_counter() - t0:.1f} s", sections, missing, writer)
    atomic_write_bytes(target, page.encode("utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(target, 0o666 & ~umask)  # the atomic write's temporary file is private (0600); a report is for reading
    return target


# --------------------------------------------------------------------------------------------- one run
def _describe(run: RunData) -> str:
    cfg = run.config
    if cfg is None:
        return f"run folder {run.path}"
    m, loss = cfg.mining, cfg.loss
    mining = f"{m.strategy} mining"
    if m.strategy == "smart":
        kappa0 = m.kappa if isinstance(m.kappa, str) else f"{m.kappa:g}"  # "auto" or a number
        steer = f"{m.controller} " if m.adaptive else "fixed "
        mining += f" ({m.index} index, {m.selection} selection, {steer}κ₀={kappa0}"
        mining += f", target error {m.target_error:g})" if m.adaptive else ")"
    glob = f" + global loss (w={loss.global_weight:g})" if loss.global_weight > 0 else ""
    epochs = f"{run.last_epoch or 0}/{cfg.train.epochs} epochs"
    model = f"{cfg.model.backbone} ({cfg.model.embedding_dim}-d)"
    return f"{cfg.data.name} · {model} · {loss.name}{glob} · {mining} · {epochs}"


def _guard(notes: list[str], what: str, fn: Callable[[], Plot]) -> Plot | None:
    """Run a figure builder; an unexpected failure becomes a note in the report, never a crash of the report."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 — the report must still be written
        logger.exception("report: %s failed", what)
        notes.append(f"{what}: could not be drawn ({type(exc).__name__}: {exc}).")
        return None


def _final_table(run: RunData) -> Table | None:
    final = run.final_metrics
    if not final:
        return None
    keys = sorted(final, key=metric_sort_key)
    header = ["metric (unseen classes)", "model"]
    rows = [[k, f"{final[k]:.3f}"] for k in keys]
    for name, ref, difference in reference_columns(run.baseline, run.untrained):
        header += [name, difference]
        for row, k in zip(rows, keys, strict=True):
            b = ref.get(k)
            row += ["—", ""] if b is None else [f"{b:.3f}", f"{final[k] - b:+.3f}"]
    epoch = int(run.eval_rows[-1]["epoch"])
    return Table(header, rows, caption=f"Test metrics at the latest evaluation (epoch {epoch})")


def _summary_section(run: RunData) -> Section:
    sec = Section("summary", "Summary", intro=escape(_describe(run)))
    table = _final_table(run)
    if table is not None:
        sec.tables.append(table)
    else:
        sec.notes.append("No evaluation has finished yet: there are no test metrics.")
    if run.metrics:
        seconds = sum(float(r.get("epoch_seconds", 0.0)) for r in run.metrics)
        mining = sum(float(r.get("mining_seconds", 0.0)) for r in run.metrics)
        rows = [
            ["epochs logged", f"{run.last_epoch}" + (f" of {run.planned_epochs}" if run.planned_epochs else "")],
            ["training time", f"{seconds:.0f} s"],
        ]
        if mining > 0 and seconds > 0:
            rows.append(["mining time", f"{mining:.0f} s ({mining / seconds:.0%} of training)"])
        rows.append(["finished", "yes" if run.finished else "no"])
        sec.tables.append(Table(["run", str(run.name)], rows))
    return sec


def _curve_section(runs: list[RunData]) -> Section:
    sec = Section("curves", "Curves per epoch")
    for builder in (curves.training_curves, curves.retrieval_curves):
        try:
            plot, notes = builder(runs)
        except Exception as exc:  # noqa: BLE001
            logger.exception("report: curves failed")
            plot, notes = None, [f"{builder.__name__}: could not be drawn ({type(exc).__name__}: {exc})."]
        if plot is not None:
            plot.notes = []  # shown once, in the section notes
            sec.plots.append(plot)
        sec.notes.extend(notes)
    return sec


def _test_images(run: RunData, cache: dict) -> tuple[ImageSource | None, str | None]:
    """The test split's images if they line up with the saved embeddings (same count and labels)."""
    if "test" not in cache:
        images, reason = open_images(run.config, "test")
        if images is not None and run.test_labels is not None:
            ds_labels = np.asarray(images.dataset.labels)
            if ds_labels.shape != run.test_labels.shape or not np.array_equal(ds_labels, run.test_labels):
                images, reason = (
                    None,
                    (
                        f"the test split loaded now ({len(ds_labels)} images) does not match the "
                        f"{len(run.test_labels)} saved test labels"
                    ),
                )
        cache["test"] = (images, reason)
    return cache["test"]


def _embedding_section(
    run: RunData, cache: dict, *, thumbnails: bool, map_method: str, max_map_points: int, seed: int
) -> Section:
    sec = Section("embeddings", "Test embeddings")
    emb, labels = run.test_last, run.test_labels
    epochs = run.embedding_epochs
    if emb is None or labels is None:
        sec.notes.append("No test embeddings saved yet: the map and the histograms appear after the first evaluation.")
        return sec
    images = None
    if thumbnails:
        images, reason = _test_images(run, cache)
        if images is None:
            sec.notes.append(f"Thumbnails on the map were asked for but are left out: {reason}.")
    named = images if images is not None else _test_images(run, cache)[0]  # class names for the map's legend
    plot = _guard(
        sec.notes,
        "Embedding map",
        lambda: embedding_views.embedding_map(
            emb,
            labels,
            epoch=epochs.get("last"),
            method=map_method,
            seed=seed,
            max_points=max_map_points,
            images=images,
            class_names=None if named is None else named.dataset.class_names,
        ),
    )
    if plot is not None:
        sec.plots.append(plot)
    snaps = []
    if run.test_first is not None and epochs.get("first") != epochs.get("last"):
        snaps.append((f"first evaluation (epoch {epochs.get('first', '?')})", run.test_first))
    elif run.test_first is not None:
        sec.notes.append("Only one evaluation so far: the histograms show it alone.")
    snaps.append((f"latest evaluation (epoch {epochs.get('last', '?')})", emb))
    plot = _guard(
        sec.notes, "Pair-distance histograms", lambda: embedding_views.distance_histograms(snaps, labels, seed=seed)
    )
    if plot is not None:
        sec.plots.append(plot)
    return sec


def _triplet_section(run: RunData, cache: dict, triplet_epochs: list[int] | None) -> Section:
    strategy = run.mined[0].strategy if run.mined else (run.config.mining.strategy if run.config else "?")
    sec = Section("triplets", f"Mined triplets ({strategy})")
    if not run.mined:
        why = " (smart mining starts after the warm-up epochs)" if strategy == "smart" else ""
        sec.notes.append(f"No mined-triplet samples recorded yet (mined/ is empty){why}.")
        return sec
    available = [r.epoch for r in run.mined]
    if triplet_epochs is None:
        wanted = galleries.pick_epochs(available)
    else:
        wanted = [e for e in triplet_epochs if e in available]
        absent = [e for e in triplet_epochs if e not in available]
        if absent:
            sec.notes.append(
                f"No mined triplets recorded for epoch(s) {', '.join(map(str, absent))} "
                f"(recorded: {', '.join(map(str, available))})."
            )
    records = [r for r in run.mined if r.epoch in wanted]
    if not records:
        return sec
    if "train" not in cache:
        cache["train"] = open_images(run.config, "train")
    images, reason = cache["train"]
    if images is not None:
        plot = _guard(
            sec.notes,
            "Triplet gallery",
            lambda: galleries.triplet_gallery(records, images, np.asarray(images.dataset.labels)),
        )
        if plot is not None:
            sec.plots.append(plot)
            if images.failures:
                sec.notes.append("Some training images could not be read: " + "; ".join(images.failures))
            return sec
    else:
        sec.notes.append(f"No thumbnails: {reason}. The chosen triplets are listed by training-set row instead.")
    sec.tables.append(
        Table(
            ["epoch", "anchor", "positive", "negative", "d+", "d−"],
            galleries.triplet_table(records),
            caption="Mined triplets (training-set row indices)",
        )
    )
    return sec


def _retrieval_section(run: RunData, cache: dict, seed: int) -> Section:
    sec = Section("retrieval", "Retrieval gallery")
    emb, labels = run.test_last, run.test_labels
    if emb is None or labels is None or emb.shape[0] < 2:
        sec.notes.append("No test embeddings saved yet: the retrieval gallery appears after the first evaluation.")
        return sec
    images, reason = _test_images(run, cache)
    if images is not None:
        plot = _guard(
            sec.notes,
            "Retrieval gallery",
            lambda: galleries.retrieval_gallery(emb, labels, images, epoch=run.embedding_epochs.get("last"), seed=seed),
        )
        if plot is not None:
            sec.plots.append(plot)
            return sec
    else:
        sec.notes.append(f"No thumbnails: {reason}. The neighbours are listed by test-set row instead.")
    table = galleries.retrieval_table(emb, labels, seed=seed)
    k = len(table[0]) - 2 if table else 0
    sec.tables.append(
        Table(
            ["query", "class", *[f"#{j + 1}" for j in range(k)]],
            table,
            caption="Top neighbours of test queries (row (class) ✓ same class / ✗ other class)",
        )
    )
    return sec


def _single_report(
    run: RunData, *, thumbnails: bool, triplet_epochs: list[int] | None, map_method: str, max_map_points: int, seed: int
) -> tuple[str, str, list[Section], list[str]]:
    cache: dict = {}
    sections = [_summary_section(run), _curve_section([run])]
    sections.append(
        _embedding_section(
            run, cache, thumbnails=thumbnails, map_method=map_method, max_map_points=max_map_points, seed=seed
        )
    )
    sections.append(_triplet_section(run, cache, triplet_epochs))
    sections.append(_retrieval_section(run, cache, seed))
    return f"smartmine report: {run.name}", _describe(run), sections, list(run.missing)


# --------------------------------------------------------------------------------------------- comparison
def _comparison_tables(runs: list[RunData], target: Path) -> tuple[list[Table], list[str]]:
    notes: list[str] = []
    keys = sorted({k for run in runs for k in run.final_metrics}, key=metric_sort_key)
    rows, best = [], set()
    for run in runs:
        final = run.final_metrics
        epoch = int(run.eval_rows[-1]["epoch"]) if run.eval_rows else None
        rows.append(
            [run.name, "—" if epoch is None else str(epoch), *[f"{final[k]:.3f}" if k in final else "—" for k in keys]]
        )
        for k in keys:
            if k not in final and final:
                notes.append(f"{run.name}: {k} was not recorded.")
        if not final:
            notes.append(f"{run.name}: no evaluation yet, no final metrics.")
    for j, k in enumerate(keys):
        values = [run.final_metrics.get(k, -math.inf) for run in runs]
        top = max(values)
        if math.isfinite(top):
            best |= {(i, j + 2) for i, v in enumerate(values) if v == top}
    metrics = Table(["run", "eval epoch", *keys], rows, best, "Final test metrics (best per column in bold)")
    info_rows = []
    for run in runs:
        seconds = sum(float(r.get("epoch_seconds", 0.0)) for r in run.metrics)
        mining = sum(float(r.get("mining_seconds", 0.0)) for r in run.metrics)
        link = run.path / REPORT_NAME
        rel = os.path.relpath(link, target.parent) if link.exists() else "(no report.html yet)"
        info_rows.append(
            [
                run.name,
                _describe(run),
                f"{seconds:.0f} s",
                f"{mining / seconds:.0%}" if seconds > 0 and mining > 0 else "—",
                rel,
            ]
        )
    info = Table(["run", "setup", "training time", "mining share", "single-run report"], info_rows, caption="The runs")
    return [metrics, info], notes


def _comparison_report(runs: list[RunData], target: Path) -> tuple[str, str, list[Section], list[str]]:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # same folder names under different parents: disambiguate with the parent
        for r in runs:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"
    tables, notes = _comparison_tables(runs, target)
    summary = Section("summary", "Final metrics", tables=tables, notes=notes)
    sections = [summary, _curve_section(runs)]
    hist = Section("histograms", "Pair-distance histograms (latest evaluation)")
    for run in runs:
        if run.test_last is None or run.test_labels is None:
            hist.notes.append(f"{run.name}: no test embeddings saved yet.")
            continue
        plot = _guard(
            hist.notes,
            f"{run.name} histograms",
            lambda run=run: embedding_views.distance_histograms(
                [(f"{run.name}, epoch {run.embedding_epochs.get('last', '?')}", run.test_last)], run.test_labels
            ),
        )
        if plot is not None:
            plot.key = f"distance_histograms_{len(hist.plots)}"
            hist.plots.append(plot)
    sections.append(hist)
    missing = [f"{r.name}: {m}" for r in runs for m in r.missing]
    return f"smartmine comparison: {', '.join(r.name for r in runs)}", f"{len(runs)} runs", sections, missing
