"""Bad data: fuzz the image readers and the CSV reader; every bad input is a precise error or a counted skip.

Categories (the ones issue 7 names): truncated JPEGs, zero-byte files, wrong extensions, non-image files, huge
dimensions (decompression-bomb sized headers), non-UTF-8 file names; CSVs with missing columns, duplicate paths,
string / negative / empty labels, bad split values. Set ``SMARTMINE_FUZZ_REPORT=file.json`` to write the per-category
counts (the figures in docs/RELIABILITY.md).
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from smartmine.data.base import DatasetLayoutError, ImageFileDataset
from smartmine.data.images import BadImageError, check_image, display_path, load_image
from smartmine.data.registry import load_dataset

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tally():
    """Per category: inputs tried and inputs handled cleanly (written out when SMARTMINE_FUZZ_REPORT is set)."""
    counts: dict[str, Counter] = {"tried": Counter(), "clean": Counter()}
    yield counts
    target = os.environ.get("SMARTMINE_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps({k: dict(v) for k, v in counts.items()}, indent=2, sort_keys=True))


# ------------------------------------------------------------------------------------------------ file builders


def _image_bytes(fmt: str, size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(width: int, height: int) -> bytes:
    """A valid PNG header that claims ``width × height`` RGB pixels, with one tiny IDAT (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@st.composite
def bad_files(draw):
    """``(category, file name as bytes, content, expected)`` with expected ``"error"``, ``"ok"`` or ``"either"``."""
    category = draw(st.sampled_from(
        ["truncated_jpeg", "zero_byte", "wrong_extension", "non_image", "huge_dimensions", "non_utf8_name"]
    ))  # fmt: skip
    seed = draw(st.integers(0, 2**16))
    name = b"img.jpg"
    if category == "truncated_jpeg":
        data = _image_bytes("JPEG", (40, 32), seed)
        data = data[: int(len(data) * draw(st.floats(0.02, 0.97)))]
        expected = "error"
    elif category == "zero_byte":
        data, expected = b"", "error"
        name = draw(st.sampled_from([b"a.jpg", b"a.png", b"a.bmp"]))
    elif category == "wrong_extension":
        # an image under another image suffix loads (Pillow sniffs the content); text under an image suffix fails
        if draw(st.booleans()):
            data, name, expected = _image_bytes("PNG", (9, 7), seed), b"really_png.jpg", "ok"
        else:
            data, name, expected = b"label,path\n1,a.jpg\n", b"notes.png", "error"
    elif category == "non_image":
        data = draw(st.binary(min_size=1, max_size=300))
        name = draw(st.sampled_from([b"x.jpg", b"x.png", b"x.gif", b"x.webp", b"x.ppm"]))
        expected = "either"  # random bytes are almost never an image; if they are, loading them is fine
    elif category == "huge_dimensions":
        data = _huge_png(draw(st.integers(20_000, 200_000)), draw(st.integers(20_000, 200_000)))
        name, expected = b"bomb.png", "error"
    else:  # a name that is not valid UTF-8, with good or bad content
        name = b"caf\xe9_" + draw(st.sampled_from([b"\xff\xfe", b"\x80", b"\xc3("])) + b".jpg"
        good = draw(st.booleans())
        data = _image_bytes("JPEG", (12, 10), seed) if good else b"\x00garbage"
        expected = "ok" if good else "error"
    return category, name, data, expected


def _write(folder: bytes, name: bytes, data: bytes) -> bytes:
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def _names_file(exc: BaseException, path: str) -> bool:
    text = str(exc)
    text.encode("utf-8")  # printable: no lone surrogates from undecodable names
    return display_path(path) in text


# ------------------------------------------------------------------------------------------------ image files


@FUZZ
@given(case=bad_files())
def test_fuzzed_image_file_gives_bad_image_error_or_loads(case, tally) -> None:
    """load_image / check_image either succeed or raise BadImageError naming the file — nothing else escapes."""
    category, name, data, expected = case
    tally["tried"][category] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.fsdecode(_write(os.fsencode(tmp), name, data))
        outcomes = []
        for call in (lambda: load_image(path), lambda: check_image(path, "header")):
            try:
                call()
                outcomes.append("ok")
            except BadImageError as exc:
                assert exc.path == path and _names_file(exc, path), str(exc)
                outcomes.append("error")
        # decode (load_image) is the ground truth; the cheap header check may pass a file that fails to decode
        if expected != "either":
            assert outcomes[0] == expected, (category, outcomes)
        if outcomes[0] == "ok":
            assert outcomes[1] == "ok", (category, outcomes)
    tally["clean"][category] += 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(bad_files(), min_size=1, max_size=4))
def test_folder_dataset_skips_and_counts_exactly_the_bad_files(cases, tally) -> None:
    """A class-per-folder tree with fuzzed files: ``skip`` drops exactly the undecodable ones and counts them;
    ``fail`` raises BadImageError naming the first bad file when it is loaded — never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        root = os.fsencode(tmp)
        for c in (b"a", b"b", b"c", b"d"):
            os.mkdir(os.path.join(root, c))
            for j in range(2):
                _write(os.path.join(root, c), b"%d.png" % j, _image_bytes("PNG", (8, 8), j))
        bad = 0
        for i, (_category, name, data, _) in enumerate(cases):
            path = _write(os.path.join(root, b"a"), b"%d_" % i + name, data)
            try:
                load_image(os.fsdecode(path))
            except BadImageError:
                bad += 1
        ds = load_dataset("folder", root=tmp, split="all", on_bad_image="skip", verify="decode")
        assert ds.num_skipped == bad and len(ds.skipped_files) == bad
        assert len(ds) == 8 + len(cases) - bad
        try:
            strict = load_dataset("folder", root=tmp, split="all")
            for i in range(len(strict)):
                strict[i]
            assert bad == 0
        except BadImageError as exc:
            assert bad > 0 and _names_file(exc, exc.path) and os.path.dirname(exc.path).endswith("a")
    tally["tried"]["folder_tree"] += 1
    tally["clean"]["folder_tree"] += 1


# ------------------------------------------------------------------------------------------------ CSV lists

MUTATIONS = ("missing_column", "duplicate_path", "string_label", "negative_label", "float_label", "empty_label",
             "bad_split", "missing_file")  # fmt: skip


@FUZZ
@given(
    n=st.integers(2, 8),
    where=st.integers(0, 7),
    mutation=st.sampled_from(MUTATIONS),
    text=st.text(alphabet=st.characters(whitelist_categories=("L",)), min_size=1, max_size=6),
)
def test_fuzzed_csv_errors_name_the_file_and_line(n, where, mutation, text, tally) -> None:
    tally["tried"][f"csv_{mutation}"] += 1
    where = where % n
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for i in range(n):
            (folder / f"{i}.png").write_bytes(_image_bytes("PNG", (6, 6), i))
            rows.append([f"{i}.png", str(i % 2), "train"])
        row = rows[where]
        if mutation == "missing_column":
            rows[where] = row[:1]
        elif mutation == "duplicate_path":
            if where == 0:
                where = 1
            rows[where][0] = rows[0][0]
        elif mutation == "string_label":
            row[1] = "x" + text
        elif mutation == "negative_label":
            row[1] = str(-1 - len(text))
        elif mutation == "float_label":
            row[1] = "1.5"
        elif mutation == "empty_label":
            row[1] = " "
        elif mutation == "bad_split":
            row[2] = "val" + text
        else:
            row[0] = f"missing_{text}.png"
        csv_path = folder / "list.csv"
        csv_path.write_text("".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
        line = f"line {where + 1}"
        expected = BadImageError if mutation == "missing_file" else DatasetLayoutError
        with pytest.raises(expected) as info:
            ds = load_dataset("csv", root=str(csv_path), split="train")
            for i in range(len(ds)):
                ds[i]
        msg = str(info.value)
        assert "list.csv" in msg and line in msg, msg
        if mutation == "duplicate_path":
            assert "line 1" in msg  # names the earlier line too
    tally["clean"][f"csv_{mutation}"] += 1


def test_string_labels_are_accepted_when_asked(tmp_path) -> None:
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(_image_bytes("PNG", (6, 6), i))
    (tmp_path / "l.csv").write_text(
        "".join(f"{i}.png,{lab},train\n" for i, lab in enumerate(["wren", "crow", "wren", "crow"]))
    )
    ds = load_dataset("csv", root=str(tmp_path / "l.csv"), split="train", string_labels=True)
    assert ds.class_names == ["crow", "wren"] and ds.labels.tolist() == [1, 0, 1, 0]


# ------------------------------------------------------------------------------------------------ workers


def test_bad_image_in_a_dataloader_worker_names_the_file(tmp_path) -> None:
    """A corrupt file decoded inside a worker process: the error that reaches the caller names the file and the
    listing line, and is still a ValueError (BadImageError), so the CLI reports it cleanly (exit 2, no traceback)."""
    good = [tmp_path / f"{i}.png" for i in range(3)]
    for i, p in enumerate(good):
        p.write_bytes(_image_bytes("PNG", (6, 6), i))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(_image_bytes("JPEG", (40, 40), 0)[:200])
    paths = [str(p) for p in good] + [str(bad)]
    ds = ImageFileDataset(paths, [0, 0, 1, 1], ["x", "y"], sources=[f"list.csv line {i + 1}" for i in range(4)])
    loader = DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(ValueError) as info:
        for _ in loader:
            pass
    msg = str(info.value)
    assert "broken.jpg" in msg and "list.csv line 4" in msg, msg
    assert isinstance(info.value, BadImageError)


def test_bad_labels_of_in_memory_datasets_are_refused() -> None:
    from smartmine.data.base import ArrayDataset

    images = np.zeros((3, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="labels: values must lie in"):
        ArrayDataset(images, [0, -1, 1], ["a", "b"])
    with pytest.raises(ValueError, match="labels: expected integer"):
        ArrayDataset(images, np.array(["a", "b", "a"]), ["a", "b"])
    with pytest.raises(ValueError, match="labels: length 2 does not match 3 images"):
        ArrayDataset(images, [0, 1], ["a", "b"])
    assert torch.is_tensor(ArrayDataset(images, [0, 1, 1], ["a", "b"])[0][0])
