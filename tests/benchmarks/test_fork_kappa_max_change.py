"""benchmarks/fork_kappa_max_change.py: a run forked at a checkpoint trains exactly as the other setting's own run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bench_modules import load

from smartmine.run_folder import read_metrics_csv

TINY = {
    "seed": 5,
    "data": {"name": "glyphs", "options": {"variants_per_face": 1}},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "options": {"widths": [8, 16, 32]}},
    "mining": {"strategy": "smart", "index": "exact", "warmup_epochs": 1, "triplets_per_epoch": 192,
               "triplets_per_batch": 48},
    "train": {"epochs": 3, "eval_every": 1, "progress": False},
    "eval": {"compute_nmi": False},
}


def train(tmp_path: Path, name: str, kappa_max_change: float, *extra: str, fault: str | None = None):
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["mining"]["kappa_max_change"] = kappa_max_change
    raw["run_dir"] = str(tmp_path / name)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, **({"SMARTMINE_FAULT": fault} if fault else {})}
    return subprocess.run([sys.executable, "-m", "smartmine.cli", "train", str(cfg), "--no-report", *extra],
                          capture_output=True, text=True, env=env, timeout=300)


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_second" not in k}
            for r in read_metrics_csv(run / "metrics.csv")]


def test_fork_resumes_to_the_other_settings_run(tmp_path: Path) -> None:
    fork = load("fork_kappa_max_change")
    assert train(tmp_path, "four", 4.0).returncode == 0
    killed = train(tmp_path, "two", 2.0, fault="after_checkpoint:2")
    assert killed.returncode == -signal.SIGKILL
    # the epoch-2 update is the step rule's factor 2, inside both limits: a fork point
    fork.main([str(tmp_path / "two"), "--value", "4", "--epoch", "2"])
    # the patched folder resumes under the config of the run with limit 4 (the resume check compares them)
    shutil.move(tmp_path / "two", tmp_path / "forked")
    cfg = yaml.safe_load((tmp_path / "four.yaml").read_text())
    cfg["run_dir"] = str(tmp_path / "forked")
    (tmp_path / "forked.yaml").write_text(yaml.safe_dump(cfg))
    resumed = subprocess.run([sys.executable, "-m", "smartmine.cli", "train", str(tmp_path / "forked.yaml"),
                              "--resume", "--no-report"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert rows(tmp_path / "forked") == rows(tmp_path / "four")


def test_fork_refuses_the_wrong_epoch_and_a_run_that_already_differs(tmp_path: Path) -> None:
    fork = load("fork_kappa_max_change")
    killed = train(tmp_path, "two", 4.0, fault="after_checkpoint:2")
    assert killed.returncode == -signal.SIGKILL
    with pytest.raises(SystemExit, match="holds epoch 2, not 3"):
        fork.main([str(tmp_path / "two"), "--value", "2", "--epoch", "3"])
    # an update beyond the new limit means the two settings' runs have already parted
    import torch

    path = tmp_path / "two" / "checkpoints" / "last.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = fork.steered_states(ckpt["extra"], [])[0]
    state["history"][-1]["next_kappa"] = state["history"][-1]["kappa"] / 3
    torch.save(ckpt, path)
    with pytest.raises(SystemExit, match="not a fork point"):
        fork.main([str(tmp_path / "two"), "--value", "2", "--epoch", "2"])
