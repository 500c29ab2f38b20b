"""A tiny training run shared by the report tests (trained once per session) and its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import FAST

from smartmine.training.config import config_from_dict
from smartmine.training.trainer import Trainer

TINY = {
    "seed": 3,
    "data": {"name": "glyphs", "options": {"variants_per_face": 1}},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "options": {"widths": [8, 16, 32]}},
    "mining": {
        "strategy": "smart",
        "index": "exact",
        "warmup_epochs": 1,
        "triplets_per_epoch": 192,
        "triplets_per_batch": 48,
    },
    "train": {"epochs": 3, "eval_every": 1, "progress": False},
    "eval": {"compute_nmi": False},
}


def train_tiny(run_dir: Path, **sections: dict) -> Path:
    """Train the tiny config (sections override keys of :data:`TINY`) into ``run_dir``."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    raw["run_dir"] = str(run_dir)
    Trainer(config_from_dict(raw)).fit()
    return run_dir


@pytest.fixture(scope="session")
def smart_run(tmp_path_factory) -> Path:
    """Smart mining + global loss, 3 epochs (1 warm-up), evaluated every epoch."""
    return train_tiny(tmp_path_factory.mktemp("report") / "smart")


@pytest.fixture(scope="session")
def smart_report(smart_run, tmp_path_factory) -> Path:
    """The smart run's report, figures embedded as data URIs."""
    from smartmine.report import build_report

    return build_report([smart_run], out=tmp_path_factory.mktemp("pages") / "smart.html", **FAST)
