"""Robust image loading: each kind of bad file gives a BadImageError naming it; odd modes come out as RGB."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smartmine.data.images import BadImageError, check_image, display_path, load_image, to_mode


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def bad_files(tmp_path, image_writer, truncated_jpeg_writer):
    """name -> path of one bad file of each kind."""
    files = {}
    files["zero-byte"] = tmp_path / "zero.jpg"
    files["zero-byte"].write_bytes(b"")
    files["truncated-jpeg"] = truncated_jpeg_writer(tmp_path / "trunc.jpg")
    png = image_writer(tmp_path / "full.png", size=(40, 40))
    files["truncated-png"] = tmp_path / "trunc.png"
    files["truncated-png"].write_bytes(png.read_bytes()[:60])
    files["text-as-jpg"] = tmp_path / "notes.jpg"
    files["text-as-jpg"].write_text("this is not an image\n")
    files["huge-dimensions"] = tmp_path / "huge.png"
    files["huge-dimensions"].write_bytes(_png_header_only(100_000, 100_000))
    files["missing"] = tmp_path / "absent.jpg"
    return files


KINDS = ["zero-byte", "truncated-jpeg", "truncated-png", "text-as-jpg", "huge-dimensions", "missing"]


@pytest.mark.parametrize("kind", KINDS)
def test_load_image_names_the_bad_file(bad_files, kind):
    path = bad_files[kind]
    with pytest.raises(BadImageError) as info:
        load_image(path, source="list.txt line 7")
    assert str(path) in str(info.value)
    assert "list.txt line 7" in str(info.value)
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kind", KINDS)
def test_header_check_catches_every_kind(bad_files, kind):
    with pytest.raises(BadImageError, match=os.path.basename(bad_files[kind])):
        check_image(bad_files[kind], "header")


def test_check_levels(bad_files, tmp_path, image_writer):
    good = image_writer(tmp_path / "good.jpg", fmt="JPEG")
    for level in ("exists", "header", "decode"):
        check_image(good, level)  # no error
    # "exists" only looks at the file system: a truncated JPEG with a valid header passes it
    check_image(bad_files["truncated-jpeg"], "exists")
    with pytest.raises(BadImageError, match="zero-byte"):
        check_image(bad_files["zero-byte"], "exists")
    with pytest.raises(BadImageError, match="truncated"):
        check_image(bad_files["truncated-jpeg"], "decode")
    with pytest.raises(ValueError, match="level"):
        check_image(good, "thorough")


def test_png_content_with_jpg_extension_loads(tmp_path, image_writer):
    path = image_writer(tmp_path / "really_a_png.jpg", fmt="PNG", size=(5, 4), seed=3)
    img = load_image(path)
    expected = np.random.default_rng(3).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(img), expected)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "RGB"])
def test_every_mode_becomes_rgb(tmp_path, image_writer, mode):
    path = image_writer(tmp_path / f"img_{mode}.png", mode=mode, size=(7, 5))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (7, 5)


def test_grey_values_are_replicated_and_alpha_is_composited_on_white(tmp_path):
    grey = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))

    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)  # half: black over white, ~ 127
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png")).astype(int)
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    assert np.all(np.abs(out[0, 2] - 255 * (1 - 128 / 255)) <= 1)


def test_non_utf8_file_name_is_reported_printably(tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not valid UTF-8
    path = tmp_path / name
    try:
        path.write_bytes(b"garbage")
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    with pytest.raises(BadImageError) as info:
        load_image(path)
    message = str(info.value)
    message.encode("utf-8")  # printable: no lone surrogates
    assert "caf\\xe9.jpg" in message
    assert display_path(path).endswith("caf\\xe9.jpg")


def test_to_mode_gray():
    img = Image.fromarray(np.full((2, 2, 3), 90, dtype=np.uint8), "RGB")
    assert np.asarray(to_mode(img, "L")).tolist() == [[90, 90], [90, 90]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"]),
    body=st.binary(max_size=300),
)
def test_fuzzed_bytes_load_or_raise_bad_image(tmp_path, prefix, body):
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(prefix + body)
    for call in (lambda: load_image(path), lambda: check_image(path, "header")):
        try:
            call()
        except BadImageError as exc:
            assert "fuzz.jpg" in str(exc)
