"""The run folder's tabular log: ``metrics.csv``, one row per epoch, never a torn last line."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from smartmine.training.checkpoint import atomic_write_bytes

BASE_COLUMNS = [
    "epoch", "loss", "train_error", "kappa", "anchors_with_negatives", "mined_triplets", "random_triplets",
    "embed_seconds", "index_seconds", "search_seconds", "selection_seconds", "mining_seconds", "epoch_seconds",
    "images_per_second", "lr", "skipped_batches",
]


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_metrics_csv(path: str | Path, rows: list[dict]) -> None:
    """Write all rows at once, atomically. Columns: the base columns, then any others in first-seen order."""
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
    """Read ``metrics.csv`` back (numbers as floats, empty cells dropped); a torn last line is ignored."""
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
