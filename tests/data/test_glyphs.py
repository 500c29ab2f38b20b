"""The embedded glyphs dataset: size, determinism, no homoglyph classes, disjoint half/half split, learnable."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from smartmine.data.glyphs import GLYPH_FACES, homoglyph_keep_mask, load_glyphs, render_glyph_set


@pytest.fixture(scope="module")
def full():
    return render_glyph_set()


def test_shape_and_class_sizes(full):
    n_classes = len(full.characters)
    assert n_classes >= 100
    assert full.images.dtype == np.uint8 and full.images.shape[1:] == (32, 32)
    counts = np.bincount(full.labels)
    assert counts.tolist() == [len(GLYPH_FACES) * 3] * n_classes  # 16 faces x 3 variants = 48
    assert len(set(full.characters)) == n_classes
    # every image has ink, and no image is blank or saturated
    ink = full.images.reshape(len(full.images), -1).astype(np.int64).sum(axis=1)
    assert ink.min() > 0 and full.images.max() == 255


def test_scripts_and_categories_are_all_present(full):
    names = [unicodedata.name(c) for c in full.characters]
    for script in ("LATIN", "GREEK", "CYRILLIC", "DIGIT"):
        assert any(n.startswith(script) for n in names), script
    assert any(unicodedata.category(c).startswith("P") for c in full.characters)
    assert any(c.isupper() for c in full.characters) and any(c.islower() for c in full.characters)


def test_cross_script_homoglyphs_are_removed(full):
    chars = set(full.characters)
    assert {"A", "B", "O", "a", "o", "p"} <= chars  # Latin wins
    for dropped in ("\u0391", "\u0410", "\u039f", "\u041e", "\u03bf", "\u043e", "\u0430", "\u0440"):
        assert dropped not in chars, unicodedata.name(dropped)


def test_no_two_classes_have_near_identical_means(full):
    # independent of the renderer's own per-face test: compare class means over all faces and jittered variants
    n = len(full.characters)
    x = full.images.reshape(n, -1, 32 * 32).astype(np.float64).mean(axis=1) / 255.0
    l1 = cdist(x, x, "cityblock")
    ink = x.sum(axis=1)
    mean_abs = l1 / x.shape[1]  # mean absolute pixel difference, in [0, 1]
    relative = l1 / (ink[:, None] + ink[None, :])  # the same relative to the ink, in [0, 1]
    for diff, threshold in ((mean_abs, 0.004), (relative, 0.05)):
        np.fill_diagonal(diff, np.inf)
        i, j = np.unravel_index(np.argmin(diff), diff.shape)
        # exact homoglyphs (Latin A / Cyrillic A) would be ~0; the closest surviving pairs are "," and "." in
        # absolute terms (~0.006) and Latin n / Cyrillic pe (identical only in two italic faces) relatively (~0.08)
        assert diff[i, j] > threshold, (full.characters[i], full.characters[j], diff[i, j])


def test_images_are_centred(full):
    upright = full.images.reshape(len(full.characters), len(GLYPH_FACES), 3, 32, 32)[:, :, 0]
    cols = upright.astype(np.float64).sum(axis=(0, 1, 2))
    rows = upright.astype(np.float64).sum(axis=(0, 1, 3))
    centre_x = (cols * np.arange(32)).sum() / cols.sum()
    centre_y = (rows * np.arange(32)).sum() / rows.sum()
    assert abs(centre_x - 15.5) < 1.0 and abs(centre_y - 15.5) < 3.0


def test_same_seed_identical_arrays_other_seed_other_jitter(full):
    from smartmine.data import glyphs

    glyphs._upright_renders.cache_clear()  # a real second rendering, de-duplication included
    glyphs._surviving_classes.cache_clear()
    again = render_glyph_set.__wrapped__(seed=0)
    np.testing.assert_array_equal(again.images, full.images)
    np.testing.assert_array_equal(again.labels, full.labels)
    assert again.characters == full.characters
    other = render_glyph_set(seed=1)
    assert other.characters == full.characters  # de-duplication does not depend on the seed
    upright = np.arange(len(full.images)) % 3 == 0
    np.testing.assert_array_equal(other.images[upright], full.images[upright])
    assert not np.array_equal(other.images[~upright], full.images[~upright])


def test_split_is_disjoint_half_half_and_seeded(full):
    train, test = load_glyphs("train"), load_glyphs("test")
    n = len(full.characters)
    assert set(train.class_names).isdisjoint(test.class_names)
    assert set(train.class_names) | set(test.class_names) == set(full.characters)
    assert train.num_classes == n // 2 and test.num_classes == n - n // 2
    assert len(train) + len(test) == len(full.images)
    for ds in (train, test):
        assert ds.labels.dtype == np.int64 and ds.labels.min() == 0 and ds.labels.max() == ds.num_classes - 1
        assert ds.paths is None and ds.singleton_classes.size == 0
        # images really belong to their class name
        k = int(np.flatnonzero(ds.labels == 3)[0])
        src = full.characters.index(ds.class_names[3])
        np.testing.assert_array_equal(ds.images[k], full.images[np.flatnonzero(full.labels == src)[0]])
    assert load_glyphs("train", seed=0).class_names == train.class_names
    assert load_glyphs("train", seed=5, variants_per_face=1).class_names != train.class_names


def test_raw_pixel_nearest_neighbour_is_well_above_chance():
    test = load_glyphs("test")
    x = test.images.reshape(len(test), -1).astype(np.float32) / 255.0
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    np.fill_diagonal(d, np.inf)
    accuracy = float((test.labels[d.argmin(axis=1)] == test.labels).mean())
    chance = 1.0 / test.num_classes
    assert accuracy > 20 * chance and accuracy > 0.3
    assert accuracy < 0.999  # the jitter makes it non-trivial


def test_item_access(full):
    ds = load_glyphs("test")
    x, y, i = ds[-1]
    assert x.shape == (1, 32, 32) and x.dtype.is_floating_point and float(x.max()) <= 1.0
    assert (y, i) == (int(ds.labels[-1]), len(ds) - 1)
    np.testing.assert_allclose(x[0].numpy(), ds.images[-1] / 255.0, atol=1e-7)
    assert ds.sample_info["face"].shape == (len(ds),)


def test_homoglyph_mask_rule():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(4, 8, 6, 6)).astype(np.uint8)
    x = base.copy()
    x[1] = x[0]  # identical to class 0 in all faces -> dropped
    x[2, :2] = x[0, :2]  # identical in 2 of 8 faces (a quarter) -> dropped too
    x[3, :1] = x[0, :1]  # identical in 1 of 8 faces -> kept
    assert homoglyph_keep_mask(x, 0.03).tolist() == [True, False, False, True]


def test_bad_parameters():
    with pytest.raises(ValueError, match="variants_per_face"):
        render_glyph_set(variants_per_face=0)
    with pytest.raises(ValueError, match="max_rotation"):
        render_glyph_set(max_rotation=90.0)
    with pytest.raises(ValueError, match="split"):
        load_glyphs("validation")
