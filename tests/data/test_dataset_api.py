"""The common dataset type, the load_dataset registry, transform presets, digits and the cub100 smoke test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from smartmine.data.base import ArrayDataset
from smartmine.data.registry import available_datasets, load_dataset
from smartmine.data.transforms import IMAGENET_MEAN, IMAGENET_STD, get_transform, photo_transform, small_transform

CUB100_ROOT = Path(__file__).resolve().parents[2].parent / "shared/data/cub100"


def test_array_dataset_remaps_labels_and_reports_singletons():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    ds = ArrayDataset(images, [4, 1, 4, 4, 2], ["a", "b", "c", "d", "e"], name="toy", split="train")
    assert ds.class_names == ["b", "c", "e"] and ds.labels.tolist() == [2, 0, 2, 2, 1]
    assert ds.labels.dtype == np.int64 and ds.num_classes == 3
    assert ds.singleton_classes.tolist() == [0, 1]
    assert [p.tolist() for p in ds.indices_per_class()] == [[1], [4], [0, 2, 3]]
    assert ds.class_counts().tolist() == [1, 1, 3]
    x, y, i = ds[-2]
    assert (y, i) == (2, 3) and torch.equal(x, torch.from_numpy(images[3][None]).float() / 255)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(images, [0, 1, 2, 3, 9], ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(images.astype(np.float32), [0] * 5, ["a"])


def test_data_loader_batches_and_transform_is_settable():
    ds = load_dataset("digits", split="train")
    ds.transform = small_transform(train=False)
    xb, yb, ib = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert xb.shape == (4, 1, 8, 8) and ib.tolist() == [0, 1, 2, 3]
    expected = (ds.images[:4] / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(xb[:, 0].numpy(), expected, atol=1e-6)
    assert torch.equal(yb, torch.from_numpy(ds.labels[:4]))


def test_digits_split_matches_scikit_learn():
    ref = load_digits()
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert train.class_names == ["0", "1", "2", "3", "4"] and test.class_names == ["5", "6", "7", "8", "9"]
    assert len(train) == int((ref.target < 5).sum()) and len(test) == int((ref.target >= 5).sum())
    np.testing.assert_array_equal(test.labels + 5, ref.target[ref.target >= 5])
    np.testing.assert_array_equal(train.images, np.rint(ref.images[ref.target < 5] * 255 / 16).astype(np.uint8))


def test_registry_validation():
    assert {"glyphs", "digits", "cub100", "cub200", "cars196", "sop", "inshop", "folder", "csv"} <= set(
        available_datasets()
    )
    with pytest.raises(ValueError, match="did you mean 'glyphs'"):
        load_dataset("glyph")
    with pytest.raises(ValueError, match="variants_per_fase: .*did you mean 'variants_per_face'"):
        load_dataset("glyphs", variants_per_fase=2)
    with pytest.raises(ValueError, match="root: dataset 'digits' is built in"):
        load_dataset("digits", root="/data")
    with pytest.raises(ValueError, match="on_bad_image"):
        load_dataset("digits", on_bad_image="ignore")
    with pytest.raises(ValueError, match="transform"):
        load_dataset("digits", transform="val")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="query")


def test_transform_presets_by_name(tmp_path):
    ds = load_dataset("digits", split="test", transform="train")
    assert ds[0][0].shape == (1, 8, 8)
    for mode in ("L", "RGBA", "P"):
        Image.new(mode, (40, 30)).save(tmp_path / f"{mode}.png")
    (tmp_path / "c0").mkdir()
    for mode in ("L", "RGBA", "P"):
        (tmp_path / f"{mode}.png").rename(tmp_path / "c0" / f"{mode}.png")
    folder = load_dataset("folder", root=str(tmp_path), split="all", transform="test")
    for k in range(3):
        assert folder[k][0].shape == (3, 224, 224)


def test_photo_test_preset_matches_manual_pipeline():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8), "L")  # greyscale, 80 wide
    out = photo_transform(False, resize=32, crop=24)(img)
    assert out.shape == (3, 24, 24)
    # short side 60 -> 32, long side int(32 * 80 / 60) = 42; centre crop offsets round((32-24)/2), round((42-24)/2)
    resized = np.asarray(img.convert("RGB").resize((42, 32), Image.Resampling.BILINEAR)) / 255.0
    top, left = 4, 9
    crop = resized[top : top + 24, left : left + 24]
    expected = (crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=0.05)
    assert float(np.abs(out.permute(1, 2, 0).numpy() - expected).mean()) < 0.01


def test_photo_train_preset_shapes_and_randomness():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA")
    t = get_transform("train", "photo", resize=40, crop=32)
    torch.manual_seed(0)
    a = t(img)
    torch.manual_seed(1)
    b = t(img)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="crop"):
        photo_transform(True, resize=100, crop=224)
    with pytest.raises(ValueError, match="kind"):
        get_transform("train", "video")


@pytest.mark.cub100
@pytest.mark.skipif(not CUB100_ROOT.is_dir(), reason="../shared/data/cub100 is absent")
def test_cub100_smoke():
    train = load_dataset("cub100", root=str(CUB100_ROOT), split="train", transform="test")
    test = load_dataset("cub100", root=str(CUB100_ROOT), split="test")
    assert train.num_classes == 50 and test.num_classes == 50
    assert set(train.class_names).isdisjoint(test.class_names)
    assert len(train) + len(test) == 5902
    x, y, i = train[0]
    assert x.shape == (3, 224, 224) and y == 0 and i == 0
    assert test.singleton_classes.size == 0
