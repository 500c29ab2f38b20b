"""list_images: labelled and flat folders, CSV lists, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smartmine.inference import InferenceError, list_images


def _png(path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    return str(path)


def test_class_per_folder_tree_is_labelled_by_top_folder(tmp_path) -> None:
    a = _png(tmp_path / "cat" / "1.png")
    b = _png(tmp_path / "cat" / "deep" / "2.png")
    c = _png(tmp_path / "dog" / "3.jpg")
    (tmp_path / "dog" / "notes.txt").write_text("x")
    _png(tmp_path / ".hidden" / "4.png")
    listed = list_images(tmp_path)
    assert listed.paths == [a, b, c]
    assert listed.labels == ["cat", "cat", "dog"]


def test_an_image_in_the_root_makes_the_folder_unlabelled(tmp_path) -> None:
    a = _png(tmp_path / "x.png")
    b = _png(tmp_path / "sub" / "y.png")
    listed = list_images(tmp_path)
    assert sorted(listed.paths) == sorted([a, b]) and listed.labels is None


def test_csv_with_header_flags_and_relative_paths(tmp_path) -> None:
    a = _png(tmp_path / "imgs" / "a.png")
    b = _png(tmp_path / "imgs" / "b.png")
    csv = tmp_path / "list.csv"
    csv.write_text("label,path,is_query,is_gallery\nk1,imgs/a.png,1,0\nk2,imgs/b.png,false,true\n")
    listed = list_images(csv)
    assert listed.paths == [a, b] and listed.labels == ["k1", "k2"]
    assert listed.flags["is_query"].tolist() == [True, False]
    sub = listed.select(listed.flags["is_gallery"])
    assert sub.paths == [b] and sub.labels == ["k2"] and sub.flags["is_query"].tolist() == [False]


def test_csv_without_header_and_without_labels(tmp_path) -> None:
    a = _png(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("a.png\n")
    assert list_images(tmp_path / "l.csv").paths == [a] and list_images(tmp_path / "l.csv").labels is None
    (tmp_path / "m.csv").write_text("a.png,7\n")
    assert list_images(tmp_path / "m.csv").labels == ["7"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "lists no images"), ("path,label\n", "header but no rows"), ("path,label\n,x\n", "line 2"),
     ("path,label,is_query\na.png,1,maybe\n", "is_query must be 0/1")],
)
def test_bad_csv_names_file_and_line(tmp_path, text, message) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(InferenceError, match=message):
        list_images(tmp_path / "bad.csv")


def test_several_sources_concatenate_and_stay_labelled_only_if_all_are(tmp_path) -> None:
    a = _png(tmp_path / "t" / "c1" / "a.png")
    b = _png(tmp_path / "single.png")
    both = list_images([tmp_path / "t", b])
    assert both.paths == [a, b] and both.labels is None
    assert np.array_equal(list_images([tmp_path / "t", tmp_path / "t"]).labels, ["c1", "c1"])


def test_non_path_items_are_refused(tmp_path) -> None:
    with pytest.raises(InferenceError, match="expected image paths.*got Image"):
        list_images([Image.new("RGB", (2, 2))])
