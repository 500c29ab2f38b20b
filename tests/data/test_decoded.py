"""``data.decode_once``: photos decoded once, cropped/flipped/normalised per batch (smartmine.data.decoded)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smartmine.data import load_dataset
from smartmine.data.decoded import DecodedImages, PhotoBatchTransform, decode_all
from smartmine.data.transforms import IMAGENET_MEAN, IMAGENET_STD, photo_transform

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from tiny_runs import photo_config, write_photo_tree  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photo_tree(tmp_path_factory.mktemp("decoded") / "photos")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_test_time_batches_equal_the_per_image_photo_preset(photos: Path) -> None:
    # 20 × 24 px images resized to 10 × 12: both centre crops (12 -> 10 -> 8 and 12 -> 8) take columns 2..9. (Where
    # the two offsets round half differently, the decoded crop sits one pixel off the per-image one.)
    ds = load_dataset("folder", root=str(photos), split="test")
    decoded = DecodedImages(ds, 10)
    assert decoded.pixels.dtype == torch.uint8 and tuple(decoded.pixels.shape) == (len(ds), 3, 10, 10)
    batch = torch.stack([decoded[i][0] for i in range(len(ds))])
    got = PhotoBatchTransform(8)(batch)
    per_image = photo_transform(False, resize=10, crop=8)
    want = torch.stack([per_image(ds.load_pil(i)) for i in range(len(ds))])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert [decoded[i][1] for i in range(len(ds))] == ds.labels.tolist()


def test_full_box_without_flip_is_a_bilinear_resize() -> None:
    x = torch.rand(3, 3, 12, 12)
    tf = PhotoBatchTransform(8, augment=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    want = _normalise(F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))
    torch.testing.assert_close(tf(x), want, atol=1e-5, rtol=0)


def test_flips_mirror_the_unflipped_crop() -> None:
    x = torch.rand(64, 3, 10, 10)
    plain = PhotoBatchTransform(10, augment=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)(x)
    flipping = PhotoBatchTransform(10, augment=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True)(x)
    mirrored = torch.isclose(flipping, plain.flip(3), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(flipping, plain, atol=1e-5).flatten(1).all(1)
    assert bool((mirrored | same).all())
    assert 10 < int(mirrored.sum()) < 54  # about half of 64 flipped


def test_a_box_is_the_bilinear_resize_of_its_pixels() -> None:
    # A box with integer corners resampled to its own size is the box's pixels themselves.
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    tf = PhotoBatchTransform(6, augment=True, scale=(36 / 256, 36 / 256), ratio=(1.0, 1.0), hflip=False)
    torch.manual_seed(3)
    top, left, h, w = (int(v) for v in tf.boxes(1, 16, 16)[0])
    assert (h, w) == (6, 6)
    torch.manual_seed(3)
    got = tf(x)
    torch.testing.assert_close(got, _normalise(x[:, :, top : top + 6, left : left + 6]), atol=1e-5, rtol=0)


def test_boxes_follow_random_resized_crop_rules() -> None:
    torch.manual_seed(0)
    tf = PhotoBatchTransform(8, augment=True)
    boxes = tf.boxes(4000, 32, 32).numpy()
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / (32 * 32)
    # Rounding of w and h moves the area a little outside [0.08, 1] at 32 px; the ratio likewise.
    assert area.min() >= 0.05 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= 0.5 and ratio.max() <= 2.0
    assert np.median(area) == pytest.approx(0.54, abs=0.06)  # uniform area in [0.08, 1] whenever it fits
    torch.manual_seed(0)
    np.testing.assert_array_equal(tf.boxes(4000, 32, 32).numpy(), boxes)  # the global generator: repeatable


def test_impossible_ratios_fall_back_to_the_central_box() -> None:
    tf = PhotoBatchTransform(4, augment=True, scale=(1.0, 1.0), ratio=(2.0, 2.0))
    boxes = tf.boxes(5, 8, 8)  # area 64 at ratio 2 never fits 8 × 8: fallback to the centre, 8 wide, 4 high
    np.testing.assert_array_equal(boxes.numpy(), np.tile([2, 0, 4, 8], (5, 1)))


def test_bad_arguments_name_themselves(photos: Path) -> None:
    with pytest.raises(ValueError, match="crop"):
        PhotoBatchTransform(0)
    with pytest.raises(ValueError, match="scale"):
        PhotoBatchTransform(4, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="crop: 20 is larger"):
        PhotoBatchTransform(20)(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="x: expected"):
        PhotoBatchTransform(4)(torch.zeros(3, 16, 16))
    ds = load_dataset("folder", root=str(photos), split="train")
    with pytest.raises(ValueError, match="pixels"):
        DecodedImages(ds, 8, pixels=torch.zeros(len(ds), 3, 8, 9, dtype=torch.uint8))


def test_decoding_with_workers_matches_decoding_here(photos: Path) -> None:
    ds = load_dataset("folder", root=str(photos), split="train")
    torch.testing.assert_close(decode_all(ds, 12, workers=2, batch_size=5), decode_all(ds, 12))


def _run(photos: Path, tmp_path: Path, name: str, **data) -> list[dict]:
    from smartmine.training.config import config_from_dict
    from smartmine.training.trainer import Trainer

    raw = copy.deepcopy(photo_config(photos))
    raw["data"].update(data)
    raw["train"]["epochs"] = 2
    trainer = Trainer(config_from_dict({**raw, "run_dir": str(tmp_path / name)}), log=lambda _msg: None)
    trainer.fit()
    return trainer.history


def test_a_run_with_decode_once_trains_and_evaluates_like_the_per_image_path(photos: Path, tmp_path: Path) -> None:
    # Without augmentation the training batches are identical too, so the runs agree to float rounding. Crop 21 of
    # 20 × 24 images: resize 24 × 28, then centre crops 28 -> 24 -> 21 and 28 -> 21 both start at column 4.
    per_image = _run(photos, tmp_path, "per_image", augment=False, image_size=21)
    decoded = _run(photos, tmp_path, "decoded", augment=False, decode_once=True, image_size=21)
    for a, b in zip(per_image, decoded, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4)
        assert a["recall@1"] == pytest.approx(b["recall@1"], abs=1e-9)
    augmented = _run(photos, tmp_path, "augmented", decode_once=True)
    assert all(math.isfinite(r["loss"]) for r in augmented)
