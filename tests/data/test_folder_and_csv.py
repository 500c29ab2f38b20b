"""Class-per-folder trees and CSV lists, including every kind of bad row and bad file, in fail and skip modes."""

from __future__ import annotations

import logging

import pytest

from smartmine.data.base import DatasetLayoutError
from smartmine.data.images import BadImageError
from smartmine.data.registry import load_dataset


@pytest.fixture
def tree(tmp_path, image_writer):
    """root/<class>/ with 2 images each for classes ant, bee, cat, dog, eel; plus clutter that must be ignored."""
    root = tmp_path / "tree"
    for k, cname in enumerate(["dog", "ant", "eel", "bee", "cat"]):
        for j in range(2):
            image_writer(root / cname / f"{j}.png", seed=10 * k + j)
    (root / "ant" / "notes.txt").write_text("not an image, ignored by suffix")
    (root / "bee" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / ".hidden").mkdir()
    image_writer(root / ".hidden" / "x.png")
    (root / "empty").mkdir()
    image_writer(root / "cat" / "nested" / "deep.jpg", fmt="JPEG")
    return root


def test_folder_first_half_of_sorted_classes(tree):
    train = load_dataset("folder", root=str(tree), split="train")
    test = load_dataset("folder", root=str(tree), split="test")
    assert train.class_names == ["ant", "bee", "cat"] and test.class_names == ["dog", "eel"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2, 2]  # cat has a nested image too
    assert train.paths[0] == str(tree / "ant" / "0.png")
    custom = load_dataset("folder", root=str(tree), split="test", train_classes=["ant", "eel"])
    assert custom.class_names == ["bee", "cat", "dog"]
    with pytest.raises(ValueError, match="train_classes"):
        load_dataset("folder", root=str(tree), train_classes=["zebra"])


def test_folder_wrong_layout(tmp_path, image_writer):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset("folder", root=str(tmp_path / "missing"))
    image_writer(tmp_path / "flat" / "a.png")  # images but no class folders
    with pytest.raises(DatasetLayoutError, match="one sub-folder|class sub-folders"):
        load_dataset("folder", root=str(tmp_path / "flat"))


@pytest.fixture
def tree_with_bad_files(tree, truncated_jpeg_writer):
    (tree / "ant" / "zero.jpg").write_bytes(b"")
    truncated_jpeg_writer(tree / "bee" / "cut.jpg")
    (tree / "cat" / "fake.png").write_text("plain text with an image suffix")
    return tree


def test_bad_files_fail_or_skip(tree_with_bad_files, caplog):
    # fail mode: construction only checks existence and size, so the zero-byte file is caught at once ...
    with pytest.raises(BadImageError, match="zero.jpg.*zero-byte"):
        load_dataset("folder", root=str(tree_with_bad_files))
    # ... and a deeper check names the first corrupt file
    (tree_with_bad_files / "ant" / "zero.jpg").unlink()
    with pytest.raises(BadImageError, match="cut.jpg"):
        load_dataset("folder", root=str(tree_with_bad_files), verify="header")
    ds = load_dataset("folder", root=str(tree_with_bad_files))  # cheap check passes; decoding fails on access
    bad = ds.paths.index(str(tree_with_bad_files / "bee" / "cut.jpg"))
    with pytest.raises(BadImageError, match="cut.jpg"):
        ds[bad]

    (tree_with_bad_files / "ant" / "zero.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="smartmine.data"):
        skipped = load_dataset("folder", root=str(tree_with_bad_files), on_bad_image="skip")
    assert skipped.num_skipped == 3
    assert sorted(p.rsplit("/", 1)[1] for p in skipped.skipped_files) == ["cut.jpg", "fake.png", "zero.jpg"]
    assert len(skipped) == 7 and "skipped 3" in caplog.text
    for k in range(len(skipped)):  # everything left decodes
        assert skipped[k][0].shape[0] == 3


def _csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def listed(tmp_path, image_writer):
    for k in range(6):
        image_writer(tmp_path / "imgs" / f"{k}.png", seed=k)
    return tmp_path


def test_csv_with_and_without_header(listed):
    rows = "".join(f"imgs/{k}.png,{k // 2 * 10}\n" for k in range(6))  # labels 0, 10, 20
    plain = load_dataset("csv", root=_csv(listed / "plain.csv", rows), split="train")
    headed = load_dataset("csv", root=_csv(listed / "headed.csv", "path,label\n" + rows), split="train")
    for ds in (plain, headed):
        assert ds.class_names == ["0", "10"] and ds.labels.tolist() == [0, 0, 1, 1]
        assert ds.paths[0] == str(listed / "imgs" / "0.png")
    reordered = "label,extra,path\n" + "".join(f"{k % 3},x,imgs/{k}.png\n" for k in range(6))
    ds = load_dataset("csv", root=_csv(listed / "re.csv", reordered), split="test")
    assert ds.class_names == ["2"] and ds.paths == [str(listed / "imgs/2.png"), str(listed / "imgs/5.png")]


def test_csv_split_column(listed):
    text = "".join(f"imgs/{k}.png,{k % 2},{'train' if k < 4 else 'TEST'}\n" for k in range(6))
    root = _csv(listed / "s.csv", text)
    assert load_dataset("csv", root=root, split="train").paths == [str(listed / f"imgs/{k}.png") for k in range(4)]
    test = load_dataset("csv", root=root, split="test")
    assert test.labels.tolist() == [0, 1] and test.class_names == ["0", "1"]
    bad = _csv(listed / "bad_split.csv", "imgs/0.png,0,train\nimgs/1.png,0,validation\n")
    with pytest.raises(DatasetLayoutError, match="line 2: split"):
        load_dataset("csv", root=bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imgs/0.png,0\nimgs/1.png\n", "line 2: expected 2 columns"),
        ("imgs/0.png,0\nimgs/1.png,\n", "line 2: expected 2 columns"),
        ("imgs/0.png\n", "line 1: expected columns path,label"),
        ("imgs/0.png,0\nimgs/1.png,cat\n", "line 2: label 'cat' is not an integer"),
        ("imgs/0.png,0\nimgs/1.png,1.5\n", "line 2: label '1.5' is not an integer"),
        ("imgs/0.png,0\nimgs/1.png,-3\n", "line 2: label -3 is negative"),
        ("imgs/0.png,0\n\nimgs/./0.png,1\n", "line 3: 'imgs/./0.png' is already listed on line 1"),
        ("path,label\n", "header but no rows"),
        ("", "is empty"),
    ],
)
def test_csv_bad_rows(listed, text, message):
    with pytest.raises(DatasetLayoutError, match=message):
        load_dataset("csv", root=_csv(listed / "bad.csv", text))


def test_csv_string_labels_mapping_and_root_errors(listed):
    text = "path,label\n" + "".join(f"imgs/{k}.png,{['zebra', 'ant', 'moth'][k % 3]}\n" for k in range(6))
    root = _csv(listed / "names.csv", text)
    train = load_dataset("csv", root=root, split="train", string_labels=True)
    assert train.class_names == ["ant", "moth"]  # sorted names, first half (2 of 3)
    assert train.labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(DatasetLayoutError, match="is a folder"):
        load_dataset("csv", root=str(listed))
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset("csv", root=str(listed / "none.csv"))
    (listed / "latin1.csv").write_bytes("imgs/0.png,0\ncaf\xe9.png,1\n".encode("latin-1"))
    with pytest.raises(DatasetLayoutError, match="not UTF-8"):
        load_dataset("csv", root=str(listed / "latin1.csv"))


def test_csv_missing_image_names_line(listed):
    root = _csv(listed / "m.csv", "imgs/0.png,0\nimgs/gone.png,0\nimgs/1.png,1\n")
    with pytest.raises(BadImageError, match=r"gone\.png.*m\.csv line 2"):
        load_dataset("csv", root=root, split="all")
    ds = load_dataset("csv", root=root, split="all", on_bad_image="skip")
    assert ds.num_skipped == 1 and ds.singleton_classes.tolist() == [0, 1]
