"""Helpers for the dataset tests: tiny synthetic images and bad files written into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, *, mode: str = "RGB", size: tuple[int, int] = (12, 10), seed: int = 0, fmt=None) -> Path:
    """Write a small random image of ``mode`` to ``path`` (format from the suffix unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}.get(mode)
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert("P")
    else:
        arr = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    img.save(path, format=fmt)
    return path


def write_truncated_jpeg(path: Path, seed: int = 0) -> Path:
    """A JPEG cut in the middle of its scan data (the header is intact)."""
    write_image(path, size=(48, 48), seed=seed, fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def image_writer():
    return write_image


@pytest.fixture
def truncated_jpeg_writer():
    return write_truncated_jpeg
