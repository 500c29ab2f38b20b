from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_runs  # noqa: E402


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(run folder, data folder)``: one tiny trained photo run for the whole session."""
    return tiny_runs.make_photo_run(tmp_path_factory.mktemp("photo"))


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One tiny trained run on in-memory 8×8 greyscale images (digits)."""
    return tiny_runs.make_small_run(tmp_path_factory.mktemp("small"))
