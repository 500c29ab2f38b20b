"""The run folder: its layout, and the readers and writers of every file in it except the checkpoints' contents.

Training writes it, the report and the CLI read it; nothing else knows a file name. Layout::

    RUN/config.yaml                   the resolved config
    RUN/metrics.csv                   one row per finished epoch (never a torn last line)
    RUN/baseline.json                 raw-pixel test metrics (when eval.raw_pixel_baseline)
    RUN/untrained.json                test metrics of the model before its first step (eval.untrained_baseline)
    RUN/checkpoints/last.pt, best.pt  see smartmine.training.checkpoint
    RUN/embeddings/test_labels.npy    (N,) int64 labels of the test split
    RUN/embeddings/test_first.npy     (N, D) float32 test embeddings at the first evaluation
    RUN/embeddings/test_last.npy      (N, D) float32 test embeddings at the latest evaluation
    RUN/embeddings/epochs.json        {"first": epoch, "last": epoch}
    RUN/mined/epoch_NNN.json          for fixed training anchors, the triplet the miner chose at epoch NNN:
                                      {"epoch", "strategy", "kappa", "triplets": [{"anchor", "positive", "negative",
                                      "d_ap", "d_an"}, ...]} (positive/negative null when the anchor got none)
    RUN/results.md, RUN/report.html   written at the end by the CLI and the report

Every write is atomic (:mod:`smartmine._atomic`): a reader sees the old or the new file, never a part.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartmine._atomic import atomic_write_bytes

CONFIG = "config.yaml"
METRICS = "metrics.csv"
BASELINE = "baseline.json"
UNTRAINED = "untrained.json"
RESULTS = "results.md"
REPORT = "report.html"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
EMBEDDINGS = "embeddings"
MINED = "mined"
_MINED_NAME = re.compile(r"^epoch_(\d+)\.json$")


class RunFolder:
    """The paths of one run folder (nothing is created or read by constructing it).

    Args:
        path: the folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG, doc="``config.yaml``")
    metrics = property(lambda self: self.path / METRICS, doc="``metrics.csv``")
    baseline = property(lambda self: self.path / BASELINE, doc="``baseline.json``")
    untrained = property(lambda self: self.path / UNTRAINED, doc="``untrained.json``")
    results = property(lambda self: self.path / RESULTS, doc="``results.md``")
    report = property(lambda self: self.path / REPORT, doc="``report.html``")
    checkpoints = property(lambda self: self.path / CHECKPOINTS, doc="``checkpoints/``")
    last_checkpoint = property(lambda self: self.path / CHECKPOINTS / LAST_CHECKPOINT, doc="``checkpoints/last.pt``")
    best_checkpoint = property(lambda self: self.path / CHECKPOINTS / BEST_CHECKPOINT, doc="``checkpoints/best.pt``")
    embeddings = property(lambda self: self.path / EMBEDDINGS, doc="``embeddings/``")
    mined = property(lambda self: self.path / MINED, doc="``mined/``")

    def mined_epoch(self, epoch: int) -> Path:
        """``mined/epoch_NNN.json`` of ``epoch``."""
        return self.path / MINED / f"epoch_{epoch:03d}.json"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"


def config_schema() -> Any:
    """The module that reads and writes ``config.yaml`` (``load_config``, ``dump_config``, ``ConfigError``).

    The schema of a run's config is the trainer's; readers of a run folder (the report) get it through here, so that
    they depend on the folder's format and not on the training package.
    """
    from smartmine.training import config  # lazy: the config schema is training's, the layout is ours

    return config


# ------------------------------------------------------------------------------------------------- metrics.csv
BASE_COLUMNS = [
    "epoch", "loss", "train_error", "kappa", "anchors_with_negatives", "mined_triplets", "random_triplets",
    "embed_seconds", "index_seconds", "search_seconds", "selection_seconds", "mining_seconds", "epoch_seconds",
    "images_per_second", "lr", "skipped_batches",
]
"""The first columns of ``metrics.csv``, always present and in this order; other keys follow in first-seen order."""


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_metrics_csv(path: str | Path, rows: list[dict]) -> None:
    """Write all rows at once, atomically. Columns: :data:`BASE_COLUMNS`, then any others in first-seen order;
    floats with 6 significant digits, ``None``/NaN as empty cells."""
    columns = list(BASE_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(c)) for c in columns])
    atomic_write_bytes(Path(path), buf.getvalue().encode("utf-8"))


def read_metrics_csv(path: str | Path) -> list[dict[str, float | str]]:
    """Read ``metrics.csv`` back (numbers as floats, empty cells dropped); a torn last line is ignored; a missing
    file gives ``[]``."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, float | str] = {}
        for key, value in raw.items():
            if value in (None, ""):
                continue
            try:
                row[key] = float(value)
            except ValueError:
                row[key] = value
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- baseline.json / untrained.json
def write_baseline(run_dir: str | Path, metrics: dict[str, float]) -> None:
    """Write ``baseline.json`` (raw-pixel test metrics)."""
    _write_json(RunFolder(run_dir).baseline, metrics)


def read_baseline(run_dir: str | Path) -> dict[str, Any] | None:
    """``baseline.json`` as written, or ``None`` when absent; ``OSError``/``ValueError`` when unreadable."""
    return _read_json(RunFolder(run_dir).baseline)


def write_untrained(run_dir: str | Path, metrics: dict[str, float]) -> None:
    """Write ``untrained.json`` (test metrics of the model before its first step)."""
    _write_json(RunFolder(run_dir).untrained, metrics)


def read_untrained(run_dir: str | Path) -> dict[str, Any] | None:
    """``untrained.json`` as written, or ``None`` when absent; ``OSError``/``ValueError`` when unreadable."""
    return _read_json(RunFolder(run_dir).untrained)


def _write_json(path: Path, metrics: dict[str, float]) -> None:
    atomic_write_bytes(path, json.dumps(metrics, indent=2).encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- embeddings/
def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def save_test_embeddings(run_dir: str | Path, embeddings: torch.Tensor, labels: np.ndarray, epoch: int) -> None:
    """Keep the first evaluation's ``(N, D)`` embeddings and ``(N,)`` labels, and overwrite the latest's."""
    folder = RunFolder(run_dir).embeddings
    folder.mkdir(parents=True, exist_ok=True)
    emb = embeddings.detach().cpu().numpy().astype(np.float32)
    meta_path = folder / "epochs.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "first" not in meta or not (folder / "test_first.npy").exists():
        _save_npy(folder / "test_first.npy", emb)
        _save_npy(folder / "test_labels.npy", np.asarray(labels, dtype=np.int64))
        meta["first"] = epoch
    _save_npy(folder / "test_last.npy", emb)
    meta["last"] = epoch
    atomic_write_bytes(meta_path, json.dumps(meta).encode())


def embedding_files(run_dir: str | Path) -> dict[str, Path]:
    """Paths of ``test_first``, ``test_last``, ``test_labels`` (``.npy``) and ``epochs`` (``.json``)."""
    folder = RunFolder(run_dir).embeddings
    files = {name: folder / f"{name}.npy" for name in ("test_first", "test_last", "test_labels")}
    files["epochs"] = folder / "epochs.json"
    return files


# ------------------------------------------------------------------------------------------------- mined/
def write_mined(
    run_dir: str | Path,
    epoch: int,
    strategy: str,
    triplets: list[tuple[int, int | None, int | None]],
    embeddings: torch.Tensor | np.ndarray | None,
    kappa: float | None = None,
    index_of: dict[int, int] | None = None,
) -> None:
    """Write ``mined/epoch_NNN.json`` for the given ``(anchor, positive, negative)`` training indices.

    ``embeddings`` are the rows the miner saw: the whole training set (``index_of`` = None) or a probe batch whose
    row of training index ``i`` is ``index_of[i]``. Distances are plain Euclidean, in float64.
    """
    emb = None if embeddings is None else np.asarray(torch.as_tensor(embeddings).detach().cpu(), dtype=np.float64)

    def dist(i: int, j: int | None) -> float | None:
        if emb is None or j is None:
            return None
        ri, rj = (i, j) if index_of is None else (index_of[i], index_of[j])
        return float(np.linalg.norm(emb[ri] - emb[rj]))

    rows = [
        {"anchor": int(a), "positive": None if p is None else int(p), "negative": None if n is None else int(n),
         "d_ap": dist(a, p), "d_an": dist(a, n)}
        for a, p, n in triplets
    ]
    folder = RunFolder(run_dir)
    folder.mined.mkdir(parents=True, exist_ok=True)
    record = {"epoch": epoch, "strategy": strategy, "kappa": kappa, "triplets": rows}
    atomic_write_bytes(folder.mined_epoch(epoch), json.dumps(record, indent=1).encode())


def mined_files(run_dir: str | Path) -> list[Path]:
    """The ``mined/epoch_NNN.json`` files of a run folder, sorted by name (empty when there is no ``mined/``)."""
    folder = RunFolder(run_dir).mined
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _MINED_NAME.match(p.name))


def first_triplet_per_anchor(
    anchors: np.ndarray, positives: np.ndarray, negatives: np.ndarray, wanted: list[int]
) -> list[tuple[int, int | None, int | None]]:
    """For each anchor in ``wanted``: its first triplet in ``(anchors, positives, negatives)`` (each ``(T,)``).

    Anchors without a triplet give ``(a, None, None)``.
    """
    first: dict[int, tuple[int, int]] = {}
    for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist(), strict=True):
        if a not in first:
            first[a] = (p, n)
    return [(a, *first[a]) if a in first else (a, None, None) for a in wanted]
