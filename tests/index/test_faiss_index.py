"""FaissIndex: flat equals NumPy brute force, HNSW recall, neighbours without self, missing-faiss message."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from smartmine.index.faiss_index import FaissIndex

pytest.importorskip("faiss")


def clustered(n: int, d: int, n_clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    return (centres[rng.integers(0, n_clusters, n)] + 0.35 * rng.normal(size=(n, d))).astype(np.float32)


def brute(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    allx = clustered(2100, 16, 8)
    return allx[:2000], allx[2000:]


def test_flat_equals_brute_force(data):
    x, q = data
    d, i = FaissIndex(kind="flat").build(x).search(q, 7)
    full = brute(q, x)
    truth = np.argsort(full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(i, truth)
    np.testing.assert_allclose(d, np.take_along_axis(full, truth, axis=1), rtol=1e-4, atol=1e-4)
    assert d.dtype == np.float32 and i.dtype == np.int64


def test_hnsw_recall_high(data):
    x, q = data
    _, i = FaissIndex(kind="hnsw", hnsw_m=16, ef_search=64).build(x).search(q, 10)
    truth = np.argsort(brute(q, x), axis=1)[:, :10]
    rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, truth, strict=True)])
    assert rec >= 0.95


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_neighbours_exclude_self(data, kind):
    x = data[0][:500]
    d, i = FaissIndex(kind=kind).build(x).neighbours(5)
    assert i.shape == (500, 5)
    assert not (i == np.arange(500)[:, None]).any()
    assert np.all(np.diff(d, axis=1) >= 0)
    full = brute(x, x)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(d[:, 0], full.min(axis=1), rtol=1e-4, atol=1e-4)


def test_duplicates_kept_self_dropped():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]], dtype=np.float32)
    d, i = FaissIndex(kind="flat").build(x).neighbours(1)
    np.testing.assert_array_equal(i[:2, 0], [1, 0])
    np.testing.assert_array_equal(d[:2, 0], 0.0)


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="kind"):
        FaissIndex(kind="ivf")
    with pytest.raises(ValueError, match="hnsw_m"):
        FaissIndex(hnsw_m=0)
    index = FaissIndex(kind="flat").build(data[0][:10])
    with pytest.raises(ValueError, match="k"):
        index.neighbours(10)


def test_missing_faiss_has_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match=r"pip install smartmine\[faiss\]"):
        FaissIndex().build(np.zeros((3, 2), dtype=np.float32))
