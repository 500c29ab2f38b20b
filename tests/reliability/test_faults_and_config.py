"""Numerical faults (NaN/inf, collapse), config/CLI validation before any work, and a data-loader worker that dies.

Tiny in-process runs on the glyphs (16×16, one variant per face) with warm-up-only epochs, so no mining is needed.
"""

from __future__ import annotations

import math
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from smartmine import cli
from smartmine.run_folder import read_metrics_csv
from smartmine.training.checkpoint import load_checkpoint
from smartmine.training.config import ConfigError, config_from_dict
from smartmine.training.trainer import Trainer, TrainingError

BATCHES = 256 // 64  # triplets per epoch / triplets per batch


def tiny(run_dir: Path, **sections) -> dict:
    raw = {
        "seed": 1,
        "run_dir": str(run_dir),
        "data": {"name": "glyphs", "options": {"variants_per_face": 1, "size": 16}},
        "model": {"backbone": "small_cnn", "embedding_dim": 16, "options": {"widths": [8, 16]}},
        "mining": {"strategy": "smart", "index": "exact", "warmup_epochs": 5, "triplets_per_epoch": 256,
                   "triplets_per_batch": 64},
        "train": {"epochs": 2, "progress": False},
        "eval": {"compute_nmi": False},
    }  # fmt: skip
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def trainer(run_dir: Path, **sections) -> Trainer:
    return Trainer(config_from_dict(tiny(run_dir, **sections)), log=lambda _msg: None)


def poison_training_forward(tr: Trainer, bad_calls: set[int], value: float = math.nan) -> None:
    """Make the model's output non-finite on the given training forward calls (0-based, counted over the run)."""
    original = tr.model.forward
    calls = {"n": 0}

    def forward(x):
        out = original(x)
        if tr.model.training:
            n = calls["n"]
            calls["n"] += 1
            if n in bad_calls:
                return out * value
        return out

    tr.model.forward = forward


# ------------------------------------------------------------------------------------------------ NaN / inf


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_embedding_stops_naming_epoch_and_batch_and_keeps_last_checkpoint(tmp_path, value) -> None:
    tr = trainer(tmp_path / "run")
    poison_training_forward(tr, {BATCHES + 2}, value)  # epoch 2, batch 2
    with pytest.raises(TrainingError, match=r"epoch 2, batch 2: non-finite values in embeddings \(model output\)"):
        tr.fit()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert [int(r["epoch"]) for r in read_metrics_csv(tmp_path / "run" / "metrics.csv")] == [1]


def test_nonfinite_loss_term_is_named(tmp_path, monkeypatch) -> None:
    from smartmine.losses import GlobalLoss

    original = GlobalLoss.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        return out * math.nan if calls["n"] == 3 else out

    monkeypatch.setattr(GlobalLoss, "forward", forward)
    tr = trainer(tmp_path / "run", train={"epochs": 1})
    with pytest.raises(TrainingError, match=r"epoch 1, batch 2: non-finite values in loss term 'global'"):
        tr.fit()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()  # nothing half-trained was saved


def test_skip_mode_counts_skipped_batches_and_finishes(tmp_path) -> None:
    tr = trainer(tmp_path / "run", train={"on_nonfinite": "skip"})
    poison_training_forward(tr, {1, BATCHES + 0, BATCHES + 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        final = tr.fit()
    skipped = [str(w.message) for w in caught if "batch skipped" in str(w.message)]
    assert skipped == [
        "epoch 1, batch 1: non-finite values in embeddings (model output) (batch skipped)",
        "epoch 2, batch 0: non-finite values in embeddings (model output) (batch skipped)",
        "epoch 2, batch 3: non-finite values in embeddings (model output) (batch skipped)",
    ]
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert [r["skipped_batches"] for r in rows] == [1, 2]
    assert math.isfinite(final["recall@1"])
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_embedding_collapse_is_warned_with_the_epoch(tmp_path) -> None:
    tr = trainer(tmp_path / "run", train={"epochs": 1})
    original = tr.model.forward
    direction = torch.nn.functional.normalize(torch.ones(16), dim=0)

    def collapsed(x):
        out = original(x)
        return out * 0.0 + direction  # every image maps to the same unit vector (gradients still flow)

    tr.model.forward = collapsed
    with pytest.warns(UserWarning, match=r"epoch 1: embedding collapse"):
        tr.fit()
    row = read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]
    assert row["embedding_spread"] < 1e-3


# ------------------------------------------------------------------------------------------------ config / CLI


def _write(tmp_path: Path, raw: dict) -> Path:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.embedding_dim=0", "model.embedding_dim: must be positive"),
        ("mining.triplets_per_batch=-4", "mining.triplets_per_batch: must be positive"),
        ("train.epochs=two", "train.epochs: expected an integer"),
        ("train.epoch=3", "did you mean 'epochs'"),
        ("mining.samples_per_class=1", "mining.samples_per_class: must be >= 2"),
        ("data.name=csv", "data.root: dataset 'csv' needs a root path"),
        ("mining.index=annoy", "mining.index: 'annoy' is not one of"),
        ("optim.lr=-0.1", "optim.lr: must be positive"),
    ],
)
def test_cli_rejects_bad_options_before_any_work(tmp_path, capsys, override, message) -> None:
    cfg = _write(tmp_path, tiny(tmp_path / "run"))
    code = cli.main(["train", str(cfg), "--set", override])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_paths_are_rejected(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="data.root: '.*nowhere' does not exist"):
        config_from_dict(tiny(tmp_path / "run", data={"name": "folder", "root": str(tmp_path / "nowhere")}))
    assert cli.main(["train", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"mining": {"strategy": "hard", "classes_per_batch": 500}}, "classes_per_batch=500 exceeds the"),
        ({"mining": {"k": 1360}}, "mining.k=1360 must be below the training-set size 1360"),
    ],
)
def test_sizes_that_do_not_fit_the_data_are_refused_and_leave_no_run_folder(tmp_path, capsys, sections, message):
    raw = tiny(tmp_path / "run", **sections)
    assert cli.main(["train", str(_write(tmp_path, raw))]) == 2
    assert message in capsys.readouterr().err
    # nothing was created, so the corrected command is not refused for an "existing" run folder
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_is_never_overwritten_without_flag(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    cfg = _write(tmp_path, tiny(run, train={"epochs": 1}))
    assert cli.main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty" in err and "--overwrite" in err
    assert (run / "precious.txt").read_text() == "keep me" and sorted(os.listdir(run)) == ["precious.txt"]
    assert cli.main(["train", str(cfg), "--overwrite", "--no-report"]) == 0
    assert not (run / "precious.txt").exists() and (run / "checkpoints" / "last.pt").exists()


# ------------------------------------------------------------------------------------------------ workers


class _DyingDataset(Dataset):
    """Item 3 kills the worker process that loads it (as the OOM killer would)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        if i == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(2), i


def test_a_dataloader_worker_that_dies_is_reported() -> None:
    loader = DataLoader(_DyingDataset(), batch_size=2, num_workers=1, timeout=60)
    # torch reports either "is killed by signal: Killed" or "exited unexpectedly", depending on which check sees it
    with pytest.raises(
        RuntimeError, match=r"DataLoader worker \(pid(\(s\))? \d+\) (is killed by signal|exited unexpectedly)"
    ):
        for _ in loader:
            pass


def test_a_dataloader_worker_error_is_reported_with_its_message() -> None:
    class Failing(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            if i == 2:
                raise ValueError(f"item {i}: unreadable record")
            return np.float32(i)

    with pytest.raises(ValueError, match="item 2: unreadable record"):
        list(DataLoader(Failing(), batch_size=1, num_workers=1, timeout=60))
