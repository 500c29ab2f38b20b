"""The report's thumbnails skip the images the run skipped and name classes as the dataset does."""

from __future__ import annotations

import sys
from pathlib import Path

from smartmine.report.thumbnails import open_images
from smartmine.training.config import config_from_dict

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
from tiny_runs import write_photo_tree  # noqa: E402


def test_skipped_images_stay_skipped_and_classes_keep_their_names(tmp_path) -> None:
    root = write_photo_tree(tmp_path / "tree", classes=4, per_class=3, prefix="bird")
    (root / "bird_3" / "9.png").write_bytes(b"not an image")  # a test-split class (the last two are test classes)
    cfg = config_from_dict({"data": {"name": "folder", "root": str(root), "on_bad_image": "skip"}})
    images, reason = open_images(cfg, "test")
    assert reason is None and len(images) == 6  # 2 test classes x 3 good images; the bad one is left out
    assert [images.class_name(i) for i in (0, 1)] == ["bird_2", "bird_3"]
    assert images.class_name(7) == "c7"
    assert all(images.thumb(i) is not None for i in range(len(images)))
