"""GalleryIndex: search equals brute force, add embeds only new images, saved folders round-trip safely."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import smartmine
from smartmine.data import BadImageError
from smartmine.inference import GalleryIndex, InferenceError, list_images
from smartmine.inference.gallery import FORMAT_VERSION


@pytest.fixture(scope="module")
def model(photo_run):
    return smartmine.load(photo_run[0])


@pytest.fixture(scope="module")
def gallery(model, photo_run) -> GalleryIndex:
    return GalleryIndex.build(model, photo_run[1], progress=False)


def _brute_force(gallery_vectors: np.ndarray, queries: np.ndarray, k: int):
    d = np.linalg.norm(queries[:, None, :].astype(np.float64) - gallery_vectors[None].astype(np.float64), axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def test_search_matches_brute_force_distances_and_order(model, gallery, photo_run) -> None:
    listed = list_images(photo_run[1])
    assert gallery.paths == listed.paths and gallery.labels == listed.labels
    np.testing.assert_allclose(gallery.vectors, model.embed(listed.paths).numpy(), atol=1e-6)
    queries = gallery.vectors[::5] + 0.01
    hits = gallery.search_vectors(queries, k=4)
    want_d, want_i = _brute_force(gallery.vectors, queries, 4)
    for row, wd, wi in zip(hits, want_d, want_i, strict=True):
        assert [h.rank for h in row] == [1, 2, 3, 4]
        assert [h.path for h in row] == [gallery.paths[i] for i in wi]
        assert [h.label for h in row] == [gallery.labels[i] for i in wi]
        np.testing.assert_allclose([h.distance for h in row], wd, atol=1e-3)
        assert all(h.match is None for h in row)


def test_searching_a_gallery_image_finds_itself_first(gallery) -> None:
    path = gallery.paths[7]
    (hits,) = gallery.search(path, k=100)
    assert len(hits) == gallery.size  # k is capped at the gallery size
    assert hits[0].path == path and hits[0].distance < 1e-3


@pytest.mark.parametrize("kind", ["fanng", "faiss"])
def test_approximate_indexes_give_the_exact_answer_on_a_small_gallery(kind, model, gallery) -> None:
    if kind == "faiss":
        pytest.importorskip("faiss")
    approx = GalleryIndex(gallery.vectors, gallery.paths, gallery.labels, kind=kind, model=model)
    q = gallery.vectors[::3]
    assert [[h.path for h in r] for r in approx.search_vectors(q, 3)] == \
        [[h.path for h in r] for r in gallery.search_vectors(q, 3)]


def test_threshold_sets_match_flags(gallery) -> None:
    (plain,) = gallery.search_vectors(gallery.vectors[:1], k=gallery.size)
    t = float(np.median([h.distance for h in plain]))
    (hits,) = gallery.search_vectors(gallery.vectors[:1], k=gallery.size, threshold=t)
    assert [h.match for h in hits] == [h.distance <= t for h in hits]
    assert any(h.match for h in hits) and not all(h.match for h in hits)


def test_save_load_round_trip(gallery, tmp_path) -> None:
    out = gallery.save(tmp_path / "idx")
    assert sorted(os.listdir(out)) == ["labels.json", "manifest.json", "paths.json", "vectors.npy"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folder left
    loaded = GalleryIndex.load(out)
    np.testing.assert_array_equal(loaded.vectors, gallery.vectors)
    assert loaded.paths == gallery.paths and loaded.labels == gallery.labels
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == gallery.model.checkpoint_sha256 and manifest["size"] == gallery.size
    q = gallery.vectors[:3]
    assert [[h.path for h in r] for r in loaded.search_vectors(q, 5)] == \
        [[h.path for h in r] for r in gallery.search_vectors(q, 5)]
    with pytest.raises(InferenceError, match="already exists"):
        gallery.save(out)


def test_add_embeds_only_new_images_and_equals_a_full_build(model, photo_run, tmp_path, monkeypatch) -> None:
    from tiny_runs import write_photo_tree

    first = GalleryIndex.build(model, photo_run[1])
    more = write_photo_tree(tmp_path / "more", classes=2, per_class=3, seed=5, prefix="extra")
    embedded: list[str] = []
    original = type(model).embed_files

    def counting(self, paths, **kw):
        embedded.extend(paths)
        return original(self, paths, **kw)

    monkeypatch.setattr(type(model), "embed_files", counting)
    added = first.add([photo_run[1], more])  # the old images are listed again: only the new ones are embedded
    monkeypatch.undo()
    new_paths = list_images(more).paths
    assert added == 6 and embedded == new_paths
    full = GalleryIndex.build(model, [photo_run[1], more])
    assert first.paths == full.paths and first.labels == full.labels
    np.testing.assert_allclose(first.vectors, full.vectors, atol=1e-6)
    assert first.add(more) == 0
    with pytest.raises(InferenceError, match="labelled"):
        first.add(new_paths[0])  # a single file has no class


def test_an_index_built_by_another_run_is_refused(gallery, small_run, tmp_path) -> None:
    out = gallery.save(tmp_path / "idx")
    with pytest.raises(InferenceError, match="not comparable"):
        GalleryIndex.load(out, model=smartmine.load(small_run))


def test_wrong_format_version_and_inconsistent_files_are_refused(gallery, tmp_path) -> None:
    out = gallery.save(tmp_path / "idx")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InferenceError, match="format 2"):
        GalleryIndex.load(out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "size": gallery.size + 1}))
    with pytest.raises(InferenceError, match="do not agree with its manifest"):
        GalleryIndex.load(out)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(InferenceError, match="not a smartmine gallery index"):
        GalleryIndex.load(out)


class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_planted_pickle_payload_is_refused_and_never_run(gallery, tmp_path) -> None:
    out = gallery.save(tmp_path / "idx")
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(marker))
    np.save(out / "vectors.npy", payload, allow_pickle=True)
    assert pickle.dumps(_Payload(str(marker)))  # the payload is a real, working pickle
    with pytest.raises(InferenceError, match="pickled Python objects; refusing"):
        GalleryIndex.load(out)
    assert not marker.exists()


def test_failed_write_leaves_nothing_and_overwrite_replaces_atomically(gallery, tmp_path, monkeypatch) -> None:
    from smartmine.inference import store

    out = gallery.save(tmp_path / "idx")
    before = (out / "vectors.npy").read_bytes()

    def boom(path, arr):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        gallery.save(out, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        gallery.save(tmp_path / "fresh")
    monkeypatch.undo()
    assert (out / "vectors.npy").read_bytes() == before  # the old index is untouched
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no half-written folder, no temporary left
    small = GalleryIndex(gallery.vectors[:3], gallery.paths[:3], gallery.labels[:3], manifest=gallery.manifest)
    small.save(out, overwrite=True)
    assert GalleryIndex.load(out).size == 3 and sorted(os.listdir(tmp_path)) == ["idx"]


def test_unreadable_gallery_image_fails_before_any_embedding(model, photo_run, tmp_path) -> None:
    tree = tmp_path / "g"
    shutil.copytree(photo_run[1], tree)
    (tree / "class_0" / "zz.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(BadImageError, match="zz.png"):
        GalleryIndex.build(model, tree)
