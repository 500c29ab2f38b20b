"""The run folder: its paths; metrics.csv written whole and atomically, read back with numbers, a torn last line
ignored; the baseline, test embeddings and mined-triplet samples written and found again."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import torch

from smartmine import run_folder
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


def test_paths_of_a_run_folder(tmp_path: Path) -> None:
    f = run_folder.RunFolder(tmp_path)
    assert f.metrics == tmp_path / "metrics.csv" and f.config == tmp_path / "config.yaml"
    assert f.last_checkpoint == tmp_path / "checkpoints" / "last.pt"
    assert f.best_checkpoint == tmp_path / "checkpoints" / "best.pt"
    assert f.mined_epoch(7) == tmp_path / "mined" / "epoch_007.json"
    assert not any(tmp_path.iterdir())  # naming paths creates nothing


def test_baseline_round_trip(tmp_path: Path) -> None:
    assert run_folder.read_baseline(tmp_path) is None
    run_folder.write_baseline(tmp_path, {"recall@1": 0.5})
    assert run_folder.read_baseline(tmp_path) == {"recall@1": 0.5}


def test_untrained_round_trip_is_its_own_file(tmp_path: Path) -> None:
    assert run_folder.read_untrained(tmp_path) is None
    run_folder.write_untrained(tmp_path, {"recall@1": 0.25})
    assert run_folder.read_untrained(tmp_path) == {"recall@1": 0.25}
    assert run_folder.read_baseline(tmp_path) is None  # the raw-pixel baseline is not touched
    assert run_folder.RunFolder(tmp_path).untrained == tmp_path / "untrained.json"


def test_test_embeddings_keep_the_first_and_replace_the_last(tmp_path: Path) -> None:
    labels = np.array([0, 1])
    run_folder.save_test_embeddings(tmp_path, torch.ones(2, 3), labels, epoch=2)
    run_folder.save_test_embeddings(tmp_path, torch.zeros(2, 3), labels, epoch=4)
    files = run_folder.embedding_files(tmp_path)
    assert np.load(files["test_first"]).tolist() == [[1.0] * 3] * 2
    assert np.load(files["test_last"]).tolist() == [[0.0] * 3] * 2
    assert np.load(files["test_labels"]).dtype == np.int64
    assert json.loads(files["epochs"].read_text()) == {"first": 2, "last": 4}


def test_mined_sample_distances_from_the_rows_the_miner_saw(tmp_path: Path) -> None:
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    # A probe batch: training index 10 is row 0, 11 row 1, 12 row 2.
    run_folder.write_mined(tmp_path, 3, "hard", [(10, 12, 11), (11, None, None)], emb,
                           index_of={10: 0, 11: 1, 12: 2})
    (path,) = run_folder.mined_files(tmp_path)
    record = json.loads(path.read_text())
    assert path.name == "epoch_003.json" and record["strategy"] == "hard" and record["kappa"] is None
    assert record["triplets"][0] == {"anchor": 10, "positive": 12, "negative": 11, "d_ap": 1.0, "d_an": 5.0}
    assert record["triplets"][1] == {"anchor": 11, "positive": None, "negative": None, "d_ap": None, "d_an": None}
    (tmp_path / "mined" / "notes.txt").write_text("x")
    assert run_folder.mined_files(tmp_path) == [path]  # only epoch_NNN.json files count


def test_first_triplet_per_anchor() -> None:
    a, p, n = np.array([4, 2, 4]), np.array([5, 3, 6]), np.array([9, 8, 7])
    assert run_folder.first_triplet_per_anchor(a, p, n, [4, 1, 2]) == [(4, 5, 9), (1, None, None), (2, 3, 8)]
