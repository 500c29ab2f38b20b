"""``GalleryIndex``: embedded gallery images, searchable by image, saved as a folder.

On disk (``smartmine index RUN --images DIR --out INDEX``)::

    INDEX/manifest.json   format, version, run folder, checkpoint and its SHA-256, index kind, size, dimension
    INDEX/vectors.npy     (N, D) float32 embeddings (NumPy format, no pickle)
    INDEX/paths.json      N absolute image paths
    INDEX/labels.json     N class names (only for a labelled gallery)

Everything is JSON or a plain ``.npy`` read with ``allow_pickle=False``: opening an index never runs code. The
neighbour index (exact, FANNG or faiss) is rebuilt from the vectors when first searched — instant for ``exact``,
seconds for a FANNG or HNSW graph of thousands of images (deterministic: FANNG is seeded) — because
:mod:`smartmine.index` has no serialisation of its graphs.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartmine.data.images import display_path
from smartmine.inference import store
from smartmine.inference.errors import InferenceError
from smartmine.inference.model import TrainedModel, as_numpy, load
from smartmine.inference.sources import ImageList, list_images

FORMAT = "smartmine-gallery-index"
FORMAT_VERSION = 1
INDEX_KINDS = ("exact", "fanng", "faiss")
INDEX_SEED = 0
"""FANNG's seed: one fixed value, so an index answers the same whether or not its model is open."""


@dataclass
class Hit:
    """One search result: ``rank`` (1-based), gallery ``path``, Euclidean ``distance``, class ``label`` (or
    ``None``), and ``match`` (distance ≤ threshold; ``None`` without a threshold)."""

    rank: int
    path: str
    distance: float
    label: str | None = None
    match: bool | None = None


def _neighbour_index(kind: str, seed: int):
    if kind == "exact":
        from smartmine.index import ExactIndex

        return ExactIndex(device="cpu")
    if kind == "fanng":
        from smartmine.index import FanngIndex

        # A gallery only searches (it never asks for all-points k-NN lists or warm starts), so it takes the
        # construction that builds fastest: about half the default's time at 5k-100k points for about the same
        # search speed (docs/BENCHMARKS.md, sessions 16-17). The graph is rebuilt whenever a saved index is opened.
        return FanngIndex(seed=seed, construction="insert")
    from smartmine.index import FaissIndex

    return FaissIndex()


def _check_kind(kind: str) -> str:
    if kind not in INDEX_KINDS:
        raise InferenceError(f"index: expected one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise InferenceError("index: 'faiss' needs the faiss package: pip install 'smartmine[faiss]'") from None
    return kind


class GalleryIndex:
    """Gallery embeddings with their files and classes, searched by the model that embedded them.

    Build with :meth:`build`, grow with :meth:`add` (only the new images are embedded), query with :meth:`search`
    (images) or :meth:`search_vectors` (embeddings), persist with :meth:`save` / :meth:`load`.

    Args:
        vectors: ``(N, D)`` float32 embeddings.
        paths: ``N`` image paths.
        labels: ``N`` class names or ``None``.
        kind: neighbour index, ``"exact"`` (default), ``"fanng"`` or ``"faiss"``.
        model: the :class:`~smartmine.inference.model.TrainedModel` that embedded them (needed to search or add
            images; :meth:`load` opens it lazily from the manifest).
        manifest: provenance (run, checkpoint, SHA-256); filled from ``model`` when omitted.
    """

    def __init__(self, vectors: np.ndarray, paths: list[str], labels: list[str] | None = None, *,
                 kind: str = "exact", model: TrainedModel | None = None, manifest: dict | None = None) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(paths) or (labels is not None and len(labels) != len(paths)):
            raise InferenceError(f"gallery: {vectors.shape} vectors, {len(paths)} paths and "
                                 f"{'no' if labels is None else len(labels)} labels do not line up")
        self.vectors = vectors
        self.paths = list(paths)
        self.labels = None if labels is None else list(labels)
        self.kind = _check_kind(kind)
        self._model = model
        self.manifest = dict(manifest or {})
        if model is not None and not self.manifest:
            self.manifest = self._provenance(model)
        self.threshold: float | None = None
        """Distance at or below which a hit is a match; set from the run's calibration when the model is opened."""
        self._index: Any = None

    # ---------------------------------------------------------------------------------------------- building
    @staticmethod
    def _provenance(model: TrainedModel) -> dict:
        from smartmine import __version__

        return {"run_dir": os.path.abspath(model.run_dir), "checkpoint": os.path.abspath(model.checkpoint_path),
                "checkpoint_sha256": model.checkpoint_sha256, "smartmine_version": __version__,
                "embedding_dim": model.embedding_dim}

    @classmethod
    def build(cls, model: TrainedModel, images: Any, *, index: str = "exact", batch_size: int = 256,
              progress: bool | None = None) -> GalleryIndex:
        """Embed ``images`` (a folder, CSV, files, or an :class:`~smartmine.inference.sources.ImageList`) with
        ``model`` and index them; a labelled folder/CSV keeps its class names."""
        _check_kind(index)
        listed = images if isinstance(images, ImageList) else list_images(images)
        emb = model.embed_files(listed.paths, batch_size=batch_size, progress=progress)
        out = cls(as_numpy(emb), listed.paths, listed.labels, kind=index, model=model)
        out._attach_threshold(model)
        return out

    def add(self, images: Any, *, batch_size: int = 256, progress: bool | None = None) -> int:
        """Embed and append the images of ``images`` not in the gallery yet (by path); returns how many were added.

        The existing vectors are kept as they are (nothing is re-embedded). A labelled gallery needs labelled new
        images and vice versa.
        """
        listed = images if isinstance(images, ImageList) else list_images(images)
        if (listed.labels is None) != (self.labels is None):
            have = "labelled" if self.labels is not None else "unlabelled"
            raise InferenceError(f"the gallery is {have}; the new images must be too (a class-per-folder tree or a "
                                 "CSV with labels for a labelled gallery, a flat folder otherwise)")
        known = set(self.paths)
        fresh = np.array([p not in known for p in listed.paths], dtype=bool)
        if not fresh.any():
            return 0
        listed = listed.select(fresh)
        emb = as_numpy(self.model.embed_files(listed.paths, batch_size=batch_size, progress=progress))
        self.vectors = np.concatenate([self.vectors, emb])
        self.paths += listed.paths
        if self.labels is not None:
            self.labels += listed.labels  # type: ignore[operator]
        self._index = None  # rebuilt on the next search
        return len(listed)

    # ---------------------------------------------------------------------------------------------- searching
    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def model(self) -> TrainedModel:
        """The model that embedded the gallery (opened from the manifest's run folder on first use)."""
        if self._model is None:
            ckpt = self.manifest.get("checkpoint")
            if not ckpt or not Path(ckpt).is_file():
                raise InferenceError(f"the index was built with checkpoint {ckpt}, which is not there any more; "
                                     "pass the run folder explicitly (--run) or rebuild the index")
            self.attach(load(ckpt))
        return self._model  # type: ignore[return-value]

    def attach(self, model: TrainedModel) -> None:
        """Use ``model`` for queries; refused unless it is the checkpoint the gallery was embedded with."""
        want = self.manifest.get("checkpoint_sha256")
        if want and model.checkpoint_sha256 != want:
            raise InferenceError(
                f"the index was built with checkpoint {self.manifest.get('checkpoint')} (run "
                f"{self.manifest.get('run_dir')}), not with {model.checkpoint_path}: its embeddings are not comparable;"
                " rebuild the index with smartmine index"
            )
        self._model = model
        self._attach_threshold(model)

    def _attach_threshold(self, model: TrainedModel) -> None:
        from smartmine.inference.calibrate import load_calibration

        if self.threshold is None:
            cal = load_calibration(model)
            self.threshold = None if cal is None else cal.threshold

    def _neighbours(self):
        if self._index is None:
            if self.size == 0:
                raise InferenceError("the gallery is empty")
            self._index = _neighbour_index(self.kind, INDEX_SEED).build(self.vectors)
        return self._index

    def search_vectors(self, queries: Any, k: int = 5, *, threshold: float | None = None) -> list[list[Hit]]:
        """The ``k`` nearest gallery images of each query embedding (``(Q, D)``), nearest first.

        ``k`` is capped at the gallery size. ``threshold`` (default: :attr:`threshold`) sets ``Hit.match``.
        """
        if k < 1:
            raise InferenceError(f"k: expected a positive integer, got {k}")
        q = np.ascontiguousarray(queries.detach().cpu().numpy() if hasattr(queries, "detach") else queries,
                                 dtype=np.float32)
        sq, idx = self._neighbours().search(q, min(k, self.size))
        t = self.threshold if threshold is None else threshold
        out = []
        for row_d, row_i in zip(sq, idx, strict=True):
            hits = []
            for d, i in zip(row_d, row_i, strict=True):
                if i < 0:  # an approximate index may return fewer than k
                    continue
                dist = float(np.sqrt(max(float(d), 0.0)))
                hits.append(Hit(len(hits) + 1, self.paths[i], dist, None if self.labels is None else self.labels[i],
                                None if t is None else dist <= t))
            out.append(hits)
        return out

    def search(self, images: Any, k: int = 5, *, threshold: float | None = None, batch_size: int = 256,
               progress: bool | None = None) -> list[list[Hit]]:
        """Embed ``images`` (anything :meth:`TrainedModel.embed` takes) and search each (see
        :meth:`search_vectors`)."""
        return self.search_vectors(self.model.embed(images, batch_size=batch_size, progress=progress), k,
                                   threshold=threshold)

    # ---------------------------------------------------------------------------------------------- disk
    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the gallery to ``folder`` atomically (see the module docstring for the layout)."""
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.manifest, "index": self.kind,
                    "size": self.size, "embedding_dim": int(self.vectors.shape[1]),
                    "labelled": self.labels is not None,
                    "distance": "euclidean", "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

        def fill(tmp: Path) -> None:
            store.write_array(tmp / "vectors.npy", self.vectors)
            store.write_json(tmp / "paths.json", self.paths)
            if self.labels is not None:
                store.write_json(tmp / "labels.json", self.labels)
            store.write_json(tmp / "manifest.json", manifest)  # last: a folder with a manifest is complete

        return store.write_folder(folder, fill, overwrite=overwrite)

    @classmethod
    def load(cls, folder: str | os.PathLike, *, model: TrainedModel | None = None) -> GalleryIndex:
        """Open a saved gallery. With ``model``, it must be the checkpoint the gallery was built with; without, the
        manifest's checkpoint is opened when images are searched or added."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InferenceError(f"{display_path(folder)}: no such index folder")
        manifest = store.read_json(folder / "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InferenceError(f"{display_path(folder)}: not a smartmine gallery index (manifest.json has no "
                                 f"'{FORMAT}' format marker)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InferenceError(
                f"{display_path(folder)}: index format {manifest.get('format_version')} (written by smartmine "
                f"{manifest.get('smartmine_version')}); this smartmine reads format {FORMAT_VERSION}: rebuild it")
        vectors = store.read_array(folder / "vectors.npy")
        paths = store.read_json(folder / "paths.json")
        labels = store.read_json(folder / "labels.json") if manifest.get("labelled") else None
        n = manifest.get("size")
        ok = (vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.shape == (n, manifest.get("embedding_dim"))
              and isinstance(paths, list) and len(paths) == n and all(isinstance(p, str) for p in paths)
              and (labels is None or (isinstance(labels, list) and len(labels) == n)))
        if not ok or not np.isfinite(vectors).all():
            raise InferenceError(f"{display_path(folder)}: the index files do not agree with its manifest "
                                 f"({n} images of dimension {manifest.get('embedding_dim')}); rebuild it")
        out = cls(vectors, paths, labels, kind=manifest.get("index", "exact"), manifest=manifest)
        if model is not None:
            out.attach(model)
        return out
