"""data.holdout_classes and mining.holdout_patience end to end: classes set aside, scored every epoch, the guard
replayed from the metrics, best.pt chosen on them, exact resume, config errors."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import metric_rows, run_cli, tiny, write_config

from smartmine.data import load_dataset
from smartmine.data.splits import holdout_rows
from smartmine.evaluation import retrieval_metrics
from smartmine.report.thumbnails import open_images
from smartmine.run_folder import read_metrics_csv
from smartmine.smart import HoldoutGuard
from smartmine.training.checkpoint import load_checkpoint
from smartmine.training.config import ConfigError, config_from_dict
from smartmine.training.trainer import Trainer

HOLDOUT = {"data": {"holdout_classes": 6}, "mining": {"holdout_patience": 1},
           "train": {"epochs": 4, "best_metric": "holdout_map@r"}}  # fmt: skip


def holdout_raw(tmp_path: Path, name: str) -> dict:
    raw = tiny(tmp_path, name)
    for section, values in HOLDOUT.items():
        raw[section].update(values)
    return raw


def test_held_out_classes_are_scored_and_steer_mining(tmp_path: Path) -> None:
    raw = holdout_raw(tmp_path, "held")
    trainer = Trainer(config_from_dict(raw), log=lambda s: None)
    trainer.fit()
    full = load_dataset("glyphs", split="train", seed=3, variants_per_face=1)
    held = holdout_rows(full.labels, 6, seed=3)
    # The held-out classes are whole classes, gone from training.
    assert len(trainer.train_labels) == int((~held).sum())
    assert set(trainer.data.holdout.class_names) == {full.class_names[c] for c in np.unique(full.labels[held])}
    assert not set(trainer.data.holdout.class_names) & set(trainer.data.train.class_names)

    rows = read_metrics_csv(tmp_path / "held" / "metrics.csv")
    assert all("holdout_map@r" in r and "holdout_recall@1" in r for r in rows)
    # The last row's held-out score, re-derived from the raw held-out images and the final model.
    images = torch.from_numpy(full.images[held]).float().div(255.0)[:, None]
    trainer.model.eval()
    with torch.no_grad():
        emb = trainer.model(trainer.data.eval_batch_transform(images))
    expect = retrieval_metrics(emb, full.labels[held], ks=(1, 2, 4, 8), compute_nmi=False)
    assert rows[-1]["holdout_map@r"] == pytest.approx(float(expect["map@r"]), abs=1e-6)
    assert rows[-1]["holdout_recall@1"] == pytest.approx(float(expect["recall@1"]), abs=1e-6)

    # The guard's scale, replayed by hand from the held-out scores, and the plans it shrank.
    guard = HoldoutGuard(patience=1)
    for i, row in enumerate(rows):
        assert row["guard_scale"] == guard.update(row["holdout_map@r"], mined=row["mined_triplets"] > 0)
        if i and row["mined_triplets"] > 0:
            assert row["mined_fraction"] <= 0.5 * rows[i - 1]["guard_scale"] + 1e-12

    # The report's training thumbnails line up with the rows the run trained on (mined triplets index those).
    source, reason = open_images(trainer.cfg, "train")
    assert reason is None and len(source) == len(trainer.train_labels)
    for i in (0, len(source) // 2, len(source) - 1):
        assert np.array_equal(np.asarray(source.dataset.load_pil(i)), np.asarray(trainer.data.train.load_pil(i)))

    # best.pt is the epoch with the best held-out MAP@R (the first of equals), never a test-set choice.
    scores = [r["holdout_map@r"] for r in rows]
    best = load_checkpoint(tmp_path / "held" / "checkpoints" / "best.pt")
    assert best["epoch"] == int(np.argmax(scores)) + 1


def test_guarded_run_resumes_exactly(tmp_path: Path) -> None:
    ref = write_config(tmp_path, holdout_raw(tmp_path, "ref"))
    assert run_cli("train", str(ref), "--no-report").returncode == 0
    cfg = write_config(tmp_path, holdout_raw(tmp_path, "killed"))
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "after_checkpoint:2"})
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli("train", str(cfg), "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_rows(tmp_path / "killed") == metric_rows(tmp_path / "ref")


@pytest.mark.parametrize(
    "raw, message",
    [({"data": {"holdout_classes": 1}}, r"data.holdout_classes: must be 0 \(none\) or >= 2"),
     ({"data": {"holdout_classes": -2}}, r"data.holdout_classes: must be >= 0"),
     ({"mining": {"holdout_patience": 2}}, r"mining.holdout_patience: needs .*holdout_classes >= 2"),
     ({"mining": {"holdout_patience": 2, "strategy": "semihard"}, "data": {"holdout_classes": 4}},
      r"mining.holdout_patience: needs mining.strategy=smart"),
     ({"train": {"best_metric": "holdout_map@r"}}, r"train.best_metric: 'holdout_map@r' needs data.holdout_classes")],
)  # fmt: skip
def test_config_errors_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_too_many_held_out_classes_refused_before_a_folder_exists(tmp_path: Path) -> None:
    raw = tiny(tmp_path, "greedy", data={"holdout_classes": 10_000})
    proc = run_cli("train", str(write_config(tmp_path, raw)))
    assert proc.returncode == 2
    assert "data.holdout_classes: 10000 cannot be held out" in proc.stderr
    assert not (tmp_path / "greedy").exists()
