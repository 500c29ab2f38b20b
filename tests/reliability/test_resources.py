"""Host memory of evaluation and smart-mining selection: peak RSS of a subprocess (``memory_probe.py``).

The 1M × 64 runs take minutes on a 2-core CPU: they are marked ``slow`` and run only with ``SMARTMINE_RUN_SLOW=1``.
A small version of the same probe always runs, so the probe itself cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("memory_probe.py")
LIMIT_MIB = 8 * 1024


def probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(PROBE), *args], capture_output=True, text=True, timeout=3 * 3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what", ["eval", "mining", "miner"])
def test_memory_probe_small(what: str) -> None:
    out = probe("--what", what, "--n", "20000", "--queries", "1000", "--noise", "1.5")
    assert 0 < out["peak_rss_mib"] < 2048
    if what == "eval":
        assert out["num_queries"] == 1000 and 0.0 <= out["recall@1"] <= 1.0
    else:
        assert out["mined_triplets"] + out["random_triplets"] == 20000
    if what == "miner":  # the real SmartMiner step: exact k-NN with the default k = max(64, 2 × 50)
        assert out["k"] == 100 and out["mined_triplets"] > 0 and out["search_seconds"] > 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SMARTMINE_RUN_SLOW") != "1", reason="an hour on 2 cores; SMARTMINE_RUN_SLOW=1")
@pytest.mark.parametrize("what", ["eval", "miner"])
def test_one_million_by_64_fits_in_8_gib(what: str) -> None:
    # The full jobs: every 1M row queries the 1M gallery (eval), and SmartMiner.plan_epoch mines all 1M points.
    out = probe("--what", what, "--n", "1000000", "--dim", "64", "--noise", "1.5")
    assert out["peak_rss_mib"] < LIMIT_MIB, out
