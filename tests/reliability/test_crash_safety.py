"""Crash safety and determinism: SIGKILL at many points, resume, and compare bit for bit with an uninterrupted run.

The kills run in ``crash_harness.py`` (one subprocess with one CPU thread that forks a child per training attempt,
each child running the CLI's ``main``); see that module for the fault points. These tests assert on its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smartmine import cli
from smartmine.training.checkpoint import ConfigMismatchError
from smartmine.training.config import config_from_dict
from smartmine.training.trainer import Trainer

HARNESS = Path(__file__).with_name("crash_harness.py")
RANDOM_KILLS = 4


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("crash")
    out = work / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    env.pop("SMARTMINE_FAULT", None)
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--workdir", str(work), "--out", str(out), "--random-kills", str(RANDOM_KILLS)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    data["workdir"] = str(work)
    return data


def test_every_scripted_fault_point_kills_the_run(report: dict) -> None:
    kills = report["chains"][0]["kills"]
    assert len(kills) >= 12
    not_reached = [k["fault"] for k in kills if not k["killed"]]
    assert not_reached == [], f"fault points never reached: {not_reached}"


def test_after_every_kill_the_run_folder_is_consistent(report: dict) -> None:
    """Readable config, loadable last/best checkpoints, no torn CSV line, CSV rows and history equal the reference's."""
    for chain in report["chains"]:
        for kill in chain["kills"]:
            if kill["killed"]:
                assert kill["ok"], (chain["name"], kill["fault"], kill["problems"])
                assert kill["csv_rows"] in (kill["checkpoint_epoch"] - 1, kill["checkpoint_epoch"]) or (
                    kill["checkpoint_epoch"] == 0 and kill["csv_rows"] == 0
                )


def test_kills_cover_every_stage_of_a_run(report: dict) -> None:
    """Kills happened with no checkpoint yet, with a half-written one, and with each completed epoch on disk."""
    kills = report["chains"][0]["kills"]
    assert {k["checkpoint_epoch"] for k in kills} == {0, 1, 2, 3}
    assert any(k["fault"].startswith("write:torn") and k["tmp_files"] >= 1 for k in kills)
    # before any checkpoint, --resume was refused with a clear message and the run restarted with --overwrite
    assert report["chains"][0]["recoveries"] and all("True" in r for r in report["chains"][0]["recoveries"])


@pytest.mark.parametrize("chain_index", [0, 1])
def test_resumed_run_equals_uninterrupted_run_bit_for_bit(report: dict, chain_index: int) -> None:
    final = report["chains"][chain_index]["final"]
    assert final["history_equal"], "per-epoch metrics (all but wall-clock columns) differ from the reference"
    assert final["csv_equal"], "metrics.csv (all but wall-clock columns) differs from the reference"
    assert final["model_equal"] and final["best_model_equal"], "final weights differ from the reference"
    assert final["best_epoch"] == final["best_epoch_expected"]
    assert final["plans_equal"] and final["plans_recorded"] >= 2
    assert final["final_metrics"] == report["reference"]["final_metrics"]


def test_random_time_kills_were_survived(report: dict) -> None:
    kills = report["chains"][1]["kills"]
    assert len(kills) == RANDOM_KILLS
    assert sum(k["killed"] for k in kills) >= 1  # a kill may come after the run finished; most land mid-run


def test_same_seed_gives_same_plans_kappa_and_metrics(report: dict) -> None:
    det = report["determinism"]
    assert det["history_equal"] and det["model_equal"] and det["plans_equal"]
    kappas = det["kappa_sequence"]
    assert kappas[0] is None and kappas[1] > 0  # warm-up epoch, then the auto κ₀ read off the lists
    # Each mined epoch uses the κ the controller returned, lowered only by that epoch's cap (where the plan fills).
    assert kappas[2] <= det["next_kappa_sequence"][1]


def test_resume_under_a_changed_config_is_refused_naming_the_key(report: dict, capsys) -> None:
    work = Path(report["workdir"])
    raw = yaml.safe_load((work / "reference.yaml").read_text())
    raw["loss"] = {"margin": 0.35}
    before = (work / "reference" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigMismatchError, match=r"loss\.margin: checkpoint 0\.2, now 0\.35") as info:
        Trainer(config_from_dict(raw), resume=True)
    assert set(info.value.differences) == {"loss.margin"}
    # through the CLI: exit code 2 and the key in the message; the checkpoint is untouched
    code = cli.main(["train", str(work / "reference.yaml"), "--resume", "--set", "loss.margin=0.35"])
    assert code == 2
    assert "loss.margin" in capsys.readouterr().err
    assert (work / "reference" / "checkpoints" / "last.pt").read_bytes() == before
