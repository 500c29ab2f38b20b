"""Tiny trained runs for the inference tests: a photo run on generated PNG folders and an in-memory small-image run
(scikit-learn's 8×8 digits: the glyphs' code path without their font rendering), 1 epoch each.

Loaded by ``tests/inference/conftest.py`` and ``tests/cli/conftest.py`` (one run per test session each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_CLASSES = 6
PHOTO_PER_CLASS = 6
PHOTO_SIZE = 20


def write_photo_tree(root: Path, classes: int = PHOTO_CLASSES, per_class: int = PHOTO_PER_CLASS, *, seed: int = 0,
                     prefix: str = "class") -> Path:
    """``root/<prefix>_<c>/<i>.png``: coloured blobs, one colour and position pattern per class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"{prefix}_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, size=3)
        for i in range(per_class):
            img = np.full((PHOTO_SIZE, PHOTO_SIZE + 4, 3), 255 - base // 2, dtype=np.uint8)
            y, x = rng.integers(0, 10, size=2)
            img[y:y + 8, x:x + 8] = np.clip(base + rng.integers(-20, 20, size=3), 0, 255)
            Image.fromarray(img).save(folder / f"{i}.png")
    return root


def train_run(config: dict, run_dir: Path) -> Path:
    """Train ``config`` into ``run_dir`` in this process (the trainer the CLI uses)."""
    from smartmine.training.config import config_from_dict
    from smartmine.training.trainer import Trainer

    cfg = config_from_dict({**config, "run_dir": str(run_dir)})
    Trainer(cfg, log=lambda _msg: None).fit()
    return run_dir


def photo_config(root: Path) -> dict:
    return {
        "seed": 1,
        "data": {"name": "folder", "root": str(root), "image_size": 16},
        "model": {"backbone": "small_cnn", "embedding_dim": 8, "options": {"widths": [8, 16]}},
        "mining": {"strategy": "random", "classes_per_batch": 3, "samples_per_class": 3},
        "train": {"epochs": 1, "progress": False},
        "eval": {"compute_nmi": False, "raw_pixel_baseline": False, "ks": [1, 2]},
    }


def small_config() -> dict:
    return {
        "seed": 2,
        "data": {"name": "digits"},
        "model": {"backbone": "small_cnn", "embedding_dim": 8, "options": {"widths": [8, 16]}},
        "mining": {"strategy": "random", "classes_per_batch": 5, "samples_per_class": 4},
        "train": {"epochs": 1, "progress": False},
        "eval": {"compute_nmi": False, "raw_pixel_baseline": False},
    }


def make_photo_run(tmp: Path) -> tuple[Path, Path]:
    """``(run folder, data folder)`` of a 1-epoch photo run on a generated 6-class tree."""
    data = write_photo_tree(tmp / "photos")
    return train_run(photo_config(data), tmp / "photo_run"), data


def make_small_run(tmp: Path) -> Path:
    return train_run(small_config(), tmp / "small_run")
