"""Official benchmark layouts read from small synthetic fixture trees (a few tiny images each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from smartmine.data.base import DatasetLayoutError
from smartmine.data.images import BadImageError
from smartmine.data.registry import load_dataset


def _cub_tree(root: Path, write, class_ids, per_class: int, sep: str, first_image_id: int) -> list[tuple]:
    """CUB-style tree; returns (image_id, class_id, relpath) rows."""
    rows, image_id = [], first_image_id
    for c in class_ids:
        for k in range(per_class):
            rel = f"{c:03d}.Bird_{c}/img_{k}.jpg"
            write(root / "images" / rel, seed=image_id, fmt="JPEG")
            rows.append((image_id, c, rel))
            image_id += 1
    (root / "images.txt").write_text("".join(f"{i}{sep}{rel}\n" for i, _, rel in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{i}{sep}{c}\n" for i, c, _ in rows))
    (root / "classes.txt").write_text("".join(f"{c}{sep}{c:03d}.Bird_{c}\n" for c in class_ids))
    (root / "train_test_split.txt").write_text("".join(f"{i}{sep}1\n" for i, _, _ in rows))
    return rows


def test_cub200_official_layout(tmp_path, image_writer):
    rows = _cub_tree(tmp_path / "CUB_200_2011", image_writer, [1, 2, 3, 4], 2, " ", 1)
    train = load_dataset("cub200", root=str(tmp_path), split="train")
    test = load_dataset("cub200", root=str(tmp_path / "CUB_200_2011"), split="test")  # both roots accepted
    assert train.class_names == ["001.Bird_1", "002.Bird_2"]
    assert test.class_names == ["003.Bird_3", "004.Bird_4"]
    assert train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [0, 0, 1, 1]
    assert train.paths[0] == str(tmp_path / "CUB_200_2011" / "images" / rows[0][2])
    x, y, i = test[3]
    assert x.shape == (3, 10, 12) and (y, i) == (1, 3)


def test_cub100_layout_ignores_its_image_split(tmp_path, image_writer):
    _cub_tree(tmp_path, image_writer, [0, 1, 2, 3], 3, ", ", 0)
    train = load_dataset("cub100", root=str(tmp_path), split="train")
    test = load_dataset("cub100", root=str(tmp_path), split="test")
    assert len(train) == 6 and len(test) == 6
    assert set(train.class_names).isdisjoint(test.class_names)
    assert len(load_dataset("cub100", root=str(tmp_path), split="all")) == 12


def test_cub_errors_name_what_is_missing(tmp_path, image_writer):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset("cub200", root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetLayoutError, match=r"CUB_200_2011/images\.txt"):
        load_dataset("cub200", root=str(tmp_path))
    with pytest.raises(DatasetLayoutError, match="root is required"):
        load_dataset("cub200")
    rows = _cub_tree(tmp_path, image_writer, [0, 1], 2, ", ", 0)
    (tmp_path / "images" / rows[3][2]).unlink()  # a listed image is gone
    with pytest.raises(BadImageError, match=r"images\.txt line 4"):
        load_dataset("cub100", root=str(tmp_path), split="test")
    skipped = load_dataset("cub100", root=str(tmp_path), split="test", on_bad_image="skip")
    assert len(skipped) == 1 and skipped.num_skipped == 1 and skipped.singleton_classes.tolist() == [0]
    with open(tmp_path / "image_class_labels.txt", "a") as fh:
        fh.write("9, bird\n")
    with pytest.raises(DatasetLayoutError, match=r"image_class_labels\.txt line 5: class id must be an integer"):
        load_dataset("cub100", root=str(tmp_path))


def test_cars196_from_annotation_mat(tmp_path, image_writer):
    classes = [1, 1, 2, 3, 3, 4]
    annos = np.zeros((1, len(classes)), dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")])
    for k, c in enumerate(classes):
        rel = f"car_ims/{k + 1:06d}.jpg"
        image_writer(tmp_path / rel, seed=k, fmt="JPEG")
        annos[0, k] = (rel, np.array([[c]], dtype=np.uint8), np.array([[k % 2]], dtype=np.uint8))
    names = np.empty((1, 4), dtype=object)
    names[0, :] = ["AM General Hummer", "Acura RL", "Acura TL", "Acura TSX"]
    savemat(tmp_path / "cars_annos.mat", {"annotations": annos, "class_names": names})
    train = load_dataset("cars196", root=str(tmp_path), split="train")
    test = load_dataset("cars196", root=str(tmp_path), split="test")
    assert train.class_names == ["AM General Hummer", "Acura RL"] and train.labels.tolist() == [0, 0, 1]
    assert test.class_names == ["Acura TL", "Acura TSX"] and test.labels.tolist() == [0, 0, 1]
    assert test.paths[-1].endswith("car_ims/000006.jpg")
    assert test.singleton_classes.tolist() == [1]
    (tmp_path / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetLayoutError, match="cars_annos.mat"):
        load_dataset("cars196", root=str(tmp_path))


def _write_sop(base: Path, write) -> None:
    header = "image_id class_id super_class_id path\n"
    train = [
        (1, 1, 1, "bicycle_final/111_0.JPG"),
        (2, 1, 1, "bicycle_final/111_1.JPG"),
        (3, 2, 2, "chair_final/2_0.JPG"),
    ]
    test = [(4, 3, 1, "bicycle_final/333_0.JPG"), (5, 3, 1, "bicycle_final/333_1.JPG")]
    for name, rows in (("Ebay_train.txt", train), ("Ebay_test.txt", test)):
        (base / name).write_text(header + "".join(f"{a} {b} {c} {p}\n" for a, b, c, p in rows))
        for i, _, _, p in rows:
            write(base / p, seed=i, fmt="JPEG")


def test_sop_lists(tmp_path, image_writer):
    base = tmp_path / "Stanford_Online_Products"
    base.mkdir()
    _write_sop(base, image_writer)
    train = load_dataset("sop", root=str(tmp_path), split="train")
    test = load_dataset("sop", root=str(base), split="test")
    assert train.class_names == ["bicycle_final/1", "chair_final/2"] and train.labels.tolist() == [0, 0, 1]
    assert test.class_names == ["bicycle_final/3"] and len(test) == 2
    assert train.singleton_classes.tolist() == [1]
    assert len(load_dataset("sop", root=str(base), split="all")) == 5


def test_inshop_query_and_gallery_share_labels(tmp_path, image_writer):
    lines = [
        ("img/WOMEN/Dresses/id_00000002/01_1_front.jpg", "id_00000002", "train"),
        ("img/WOMEN/Dresses/id_00000002/01_2_side.jpg", "id_00000002", "train"),
        ("img/MEN/Tees/id_00000007/01_1_front.jpg", "id_00000007", "query"),
        ("img/MEN/Tees/id_00000007/01_2_side.jpg", "id_00000007", "gallery"),
        ("img/MEN/Tees/id_00000005/01_1_front.jpg", "id_00000005", "gallery"),
        ("img/MEN/Tees/id_00000005/01_3_back.jpg", "id_00000005", "query"),
        ("img/MEN/Tees/id_00000005/01_4_full.jpg", "id_00000005", "gallery"),
    ]
    (tmp_path / "Eval").mkdir()
    text = f"{len(lines)}\nimage_name item_id evaluation_status\n" + "".join(f"{p}  {i}  {s}\n" for p, i, s in lines)
    (tmp_path / "Eval" / "list_eval_partition.txt").write_text(text)
    for k, (p, _, _) in enumerate(lines):
        image_writer(tmp_path / "Img" / p, seed=k, fmt="JPEG")
    train = load_dataset("inshop", root=str(tmp_path), split="train")
    query = load_dataset("inshop", root=str(tmp_path), split="query")
    gallery = load_dataset("inshop", root=str(tmp_path), split="gallery")
    test = load_dataset("inshop", root=str(tmp_path), split="test")
    assert train.class_names == ["id_00000002"] and len(train) == 2
    assert query.class_names == gallery.class_names == ["id_00000005", "id_00000007"]
    assert query.labels.tolist() == [1, 0]  # id_7 then id_5, in listing order
    assert gallery.labels.tolist() == [1, 0, 0]
    assert test.sample_info["is_query"].tolist() == [True, True, False, False, False]
    assert test.labels.tolist() == [1, 0, 1, 0, 0]
    assert query.paths[0] == str(tmp_path / "Img" / lines[2][0])
    with pytest.raises(ValueError, match="split"):
        load_dataset("cub200", root=str(tmp_path), split="query")
