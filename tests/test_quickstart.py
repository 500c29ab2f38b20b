"""The README's promises: the quick start beats raw pixels on unseen classes, and the README's Python example runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smartmine.run_folder import read_metrics_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_beats_raw_pixels(tmp_path: Path) -> None:
    run_dir = tmp_path / "quickstart"
    proc = subprocess.run([sys.executable, "-m", "smartmine.cli", "quickstart", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "raw pixels" in proc.stdout and "Test metrics on classes never seen in training" in proc.stdout
    baseline = json.loads((run_dir / "baseline.json").read_text())
    final = read_metrics_csv(run_dir / "metrics.csv")[-1]
    # The bar: at least +0.15 MAP@R and +0.10 NMI over raw pixels of the same unseen test classes.
    assert final["map@r"] >= baseline["map@r"] + 0.15, (final["map@r"], baseline["map@r"])
    assert final["nmi"] >= baseline["nmi"] + 0.10, (final["nmi"], baseline["nmi"])
    # The table printed to the user is also in the run folder.
    assert "| map@r |" in (run_dir / "results.md").read_text()
    # Smart mining really ran: κ was logged and mined triplets were used after the warm-up.
    rows = read_metrics_csv(run_dir / "metrics.csv")
    assert any(r.get("mined_triplets", 0) > 0 for r in rows)
    assert all("kappa" in r for r in rows[2:])


def test_readme_python_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "recall@1" in proc.stdout


def test_readme_quick_start_is_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    assert commands == ['pip install ".[dev]" && smartmine quickstart', "python -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci
