"""metrics.csv: written whole and atomically, read back with numbers; a torn last line is ignored."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from smartmine.run_folder import BASE_COLUMNS, read_metrics_csv, write_metrics_csv


def test_round_trip_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "recall@1": 0.75}])
    header = path.read_text().splitlines()[0].split(",")
    assert header[: len(BASE_COLUMNS)] == BASE_COLUMNS and header[-1] == "recall@1"
    rows = read_metrics_csv(path)
    assert rows == [{"epoch": 1.0, "loss": 0.5}, {"epoch": 2.0, "loss": 0.25, "recall@1": 0.75}]


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, [{"epoch": 1, "loss": 0.5}])
    with path.open("a") as fh:
        fh.write("2,0.4")  # a writer killed mid-line
    assert [r["epoch"] for r in read_metrics_csv(path)] == [1.0]


def test_files_get_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_metrics_csv(tmp_path / "m.csv", [{"epoch": 1}])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.csv").stat().st_mode) == 0o644
