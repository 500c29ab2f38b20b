from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
import tiny_runs  # noqa: E402


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(run folder, data folder)``: one tiny trained photo run for the whole session."""
    return tiny_runs.make_photo_run(tmp_path_factory.mktemp("photo"))
