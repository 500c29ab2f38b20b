"""mining.batch_mining end to end: smart batches also mined in the batch train differently from the plan alone, count
the same triplets towards the error, resume exactly (a seeded miner), and refuse in-batch strategies."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_trainer import metric_rows, run_cli, tiny, write_config

from smartmine.run_folder import read_metrics_csv
from smartmine.training.config import ConfigError, config_from_dict


def test_distance_weighted_batch_mining_trains_and_resumes_exactly(tmp_path: Path) -> None:
    dense = {"batch_mining": "distance_weighted", "error_counts": "all"}
    ref = write_config(tmp_path, tiny(tmp_path, "ref", mining=dense))
    plain = write_config(tmp_path, tiny(tmp_path, "plain", mining={"error_counts": "all"}))
    assert run_cli("train", str(ref), "--no-report").returncode == 0
    assert run_cli("train", str(plain), "--no-report").returncode == 0
    with_extra, without = read_metrics_csv(tmp_path / "ref" / "metrics.csv"), read_metrics_csv(
        tmp_path / "plain" / "metrics.csv")
    # Epoch 1 (warm-up): the same random plan; the in-batch triplets change the loss, not what the error counts.
    assert with_extra[0]["random_triplets"] == without[0]["random_triplets"] == 192
    assert with_extra[0]["loss"] != without[0]["loss"]
    assert with_extra[-1]["recall@1"] != without[-1]["recall@1"]
    cfg = write_config(tmp_path, tiny(tmp_path, "killed", mining=dense))
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "after_checkpoint:2"})
    assert proc.returncode == -signal.SIGKILL
    assert run_cli("train", str(cfg), "--resume", "--no-report").returncode == 0
    assert metric_rows(tmp_path / "killed") == metric_rows(tmp_path / "ref")


def test_batch_mining_needs_smart_batches() -> None:
    with pytest.raises(ConfigError, match="mining.batch_mining: needs mining.strategy=smart"):
        config_from_dict({"mining": {"strategy": "semihard", "batch_mining": "semihard"}})
