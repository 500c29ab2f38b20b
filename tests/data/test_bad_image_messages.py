"""The default (fail) bad-image error names every bad file; an empty class folder is reported once."""

from __future__ import annotations

import logging

import pytest
from PIL import Image

from smartmine.data import BadImageError, load_dataset


def _tree(root, bad: int = 3):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (4, 4)).save(root / c / f"{i}.png")
    for i in range(bad):
        (root / "a" / f"bad{i}.png").write_bytes(b"")  # zero bytes: caught by the default 'exists' check
    (root / "empty").mkdir()
    return root


def test_fail_mode_names_all_bad_files(tmp_path) -> None:
    root = _tree(tmp_path / "t")
    with pytest.raises(BadImageError, match=r"bad0\.png: zero-byte file; 2 more bad file\(s\): .*bad1\.png, .*bad2"):
        load_dataset("folder", root=str(root), split="all")
    assert len(load_dataset("folder", root=str(root), split="all", on_bad_image="skip")) == 4


def test_empty_class_folder_is_reported_once(tmp_path, caplog) -> None:
    root = _tree(tmp_path / "t", bad=0)
    with caplog.at_level(logging.WARNING, logger="smartmine.data"):
        for split in ("train", "test", "test"):
            load_dataset("folder", root=str(root), split=split)
    assert sum("has no image files" in r.getMessage() for r in caplog.records) == 1
