"""ExactIndex / exact_knn against a NumPy brute force (float64, ties by index)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmine.index import exact as exact_module
from smartmine.index.base import NeighbourIndex
from smartmine.index.exact import DEFAULT_BLOCK_BYTES, ExactIndex, auto_chunk_size, exact_knn, iter_exact_knn


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False):
    """Squared distances in float64 by explicit differences; order by (distance, index)."""
    d = ((queries[:, None, :].astype(np.float64) - gallery[None, :, :].astype(np.float64)) ** 2).sum(-1)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    cols = np.arange(gallery.shape[0])
    order = np.stack([np.lexsort((cols, row)) for row in d])[:, :k]
    return np.take_along_axis(d, order, 1), order


def grid_points(rng: np.random.Generator, n: int, dim: int, span: int = 3) -> np.ndarray:
    # Small integer coordinates: every distance is exact in float32, so ties and duplicates are real ties.
    return rng.integers(0, span, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, None])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_matches_brute_force_random(chunk_size, exclude_self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 8)).astype(np.float32)
    q = x if exclude_self else rng.normal(size=(17, 8)).astype(np.float32)
    d, i = exact_knn(q, x, 6, exclude_self=exclude_self, chunk_size=chunk_size)
    ed, ei = brute_force(q, x, 6, exclude_self)
    assert d.dtype == torch.float32 and i.dtype == torch.int64 and d.shape == (q.shape[0], 6)
    np.testing.assert_array_equal(i.numpy(), ei)
    np.testing.assert_allclose(d.numpy(), ed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4, None])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_ties_and_duplicates_broken_by_index(chunk_size, exclude_self):
    rng = np.random.default_rng(1)
    x = grid_points(rng, 60, 2)  # 9 distinct points among 60: many duplicates and exact ties
    d, i = exact_knn(x, x, 10, exclude_self=exclude_self, chunk_size=chunk_size)
    ed, ei = brute_force(x, x, 10, exclude_self)
    np.testing.assert_array_equal(i.numpy(), ei)
    np.testing.assert_array_equal(d.numpy(), ed.astype(np.float32))


@pytest.mark.parametrize("exclude_self", [False, True])
def test_default_strips_narrower_than_column_tiles(monkeypatch, exclude_self):
    """The default CPU tiles are row strips narrower than the column tiles (512 × 4096); shrunk here to 7 × 19 over
    100 points (neither divides it), each strip meets its square block and then the column tiles to its right."""
    monkeypatch.setattr(exact_module, "CPU_TILE_ROWS", 7)
    monkeypatch.setattr(exact_module, "CPU_TILE", 19)
    x = grid_points(np.random.default_rng(3), 100, 3)  # ties and duplicates, exact in float32
    d, i = exact_knn(x, x, 12, exclude_self=exclude_self)
    ed, ei = brute_force(x, x, 12, exclude_self)
    np.testing.assert_array_equal(i.numpy(), ei)
    np.testing.assert_array_equal(d.numpy(), ed.astype(np.float32))


def test_exclude_self_keeps_duplicates():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]], dtype=np.float32)
    d, i = exact_knn(x, x, 1, exclude_self=True)
    # Each duplicate finds the other at distance 0; only its own row is removed.
    assert i[:, 0].tolist() == [1, 0, 0]
    assert d[:, 0].tolist() == [0.0, 0.0, 25.0]


def test_tie_across_topk_boundary_takes_lowest_indices():
    # The query is equidistant from the first 8 gallery points and the 9th is farther; k=3 must pick 0, 1, 2.
    eye = np.eye(4, dtype=np.float32)
    gallery = np.concatenate([eye, -eye, [[3.0, 0.0, 0.0, 0.0]]]).astype(np.float32)[[4, 0, 5, 1, 6, 2, 7, 3, 8]]
    d, i = exact_knn(np.zeros((1, 4), np.float32), gallery, 3)
    assert i[0].tolist() == [0, 1, 2]
    assert d[0].tolist() == [1.0, 1.0, 1.0]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 40),
    dim=st.integers(1, 4),
    k_frac=st.floats(0.0, 1.0),
    chunk=st.integers(1, 50),
    exclude_self=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_equals_brute_force(n, dim, k_frac, chunk, exclude_self, seed):
    x = grid_points(np.random.default_rng(seed), n, dim)
    k_max = n - 1 if exclude_self else n
    k = max(1, int(round(k_frac * k_max)))
    d, i = exact_knn(x, x, k, exclude_self=exclude_self, chunk_size=chunk)
    ed, ei = brute_force(x, x, k, exclude_self)
    np.testing.assert_array_equal(i.numpy(), ei)
    np.testing.assert_array_equal(d.numpy(), ed.astype(np.float32))


def test_exact_index_interface_numpy_and_torch():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    q = rng.normal(size=(9, 5)).astype(np.float32)
    index = ExactIndex(chunk_size=4).build(torch.from_numpy(x))
    assert isinstance(index, NeighbourIndex) and index.size == 40 and index.dim == 5
    d, i = index.search(q, 5)
    ed, ei = brute_force(q, x, 5)
    assert isinstance(d, np.ndarray) and d.dtype == np.float32 and i.dtype == np.int64
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_allclose(d, ed, rtol=1e-5, atol=1e-5)
    nd, ni = ExactIndex().build(x).neighbours(7)
    ed, ei = brute_force(x, x, 7, exclude_self=True)
    np.testing.assert_array_equal(ni, ei)
    np.testing.assert_allclose(nd, ed, rtol=1e-5, atol=1e-5)


def test_exact_index_bad_input():
    x = np.zeros((5, 3), np.float32)
    index = ExactIndex().build(x)
    with pytest.raises(ValueError, match="k:"):
        index.neighbours(5)
    with pytest.raises(ValueError, match="k:"):
        index.search(x, 6)
    with pytest.raises(ValueError, match="queries"):
        index.search(np.zeros((2, 4), np.float32), 1)
    with pytest.raises(ValueError, match="x:"):
        ExactIndex().build(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="chunk_size"):
        ExactIndex(chunk_size=0)
    with pytest.raises(RuntimeError, match="build"):
        ExactIndex().neighbours(1)


def test_exact_knn_bad_input():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="k:"):
        exact_knn(x, x, 4, exclude_self=True)
    with pytest.raises(ValueError, match="k:"):
        exact_knn(x, x, 5)
    with pytest.raises(ValueError, match="queries"):
        exact_knn(x[:3], x, 1, exclude_self=True)
    with pytest.raises(ValueError, match="gallery"):
        exact_knn(x, np.zeros(4, np.float32), 1)
    with pytest.raises(ValueError, match="queries"):
        exact_knn(np.full((1, 2), np.inf, np.float32), x, 1)
    with pytest.raises(ValueError, match="device"):
        exact_knn(x, x, 1, device="not-a-device")


def test_auto_chunk_keeps_million_point_block_within_budget():
    n, k = 1_000_000, 64
    rows = auto_chunk_size(n, k)
    assert rows >= 1
    assert rows * (4 * n + 12 * (k + 1)) <= DEFAULT_BLOCK_BYTES
    assert (rows + 1) * (4 * n + 12 * (k + 1)) > DEFAULT_BLOCK_BYTES


def test_device_block_budget_is_the_default_off_cuda():
    from smartmine.index.exact import device_block_bytes

    assert device_block_bytes(torch.device("cpu")) == DEFAULT_BLOCK_BYTES


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_blocks_match_brute_force():
    from smartmine.index.exact import GPU_BLOCK_BYTES_MAX, device_block_bytes

    budget = device_block_bytes(torch.device("cuda"))
    assert DEFAULT_BLOCK_BYTES <= budget <= GPU_BLOCK_BYTES_MAX
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    d, i = exact_knn(x, x, 7, exclude_self=True, device="cuda")
    ed, ei = brute_force(x, x, 7, exclude_self=True)
    # cuBLAS rounds differently from NumPy: near-equal distances may swap places (seen on an H200: 1 row of 2,000),
    # so each row must hold the same neighbours at the same distances, in either order of a near-tie.
    np.testing.assert_array_equal(np.sort(i.cpu().numpy(), axis=1), np.sort(ei, axis=1))
    np.testing.assert_allclose(d.cpu().numpy(), ed, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    d, i = exact_knn(x, x, 5, exclude_self=True, chunk_size=64, device="cuda")
    ed, ei = brute_force(x, x, 5, exclude_self=True)
    assert i.device.type == "cuda"
    np.testing.assert_array_equal(i.cpu().numpy(), ei)
    np.testing.assert_allclose(d.cpu().numpy(), ed, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_streamed_path_when_heaps_exceed_budget(exclude_self):
    # A 1-byte budget forbids the symmetric self-query (N × k heaps), so queries are streamed tile by tile and the
    # own row is skipped by index; duplicates keep ties by index.
    rng = np.random.default_rng(4)
    x = np.concatenate([grid_points(rng, 40, 2), rng.normal(size=(30, 2)).astype(np.float32)])
    got_d, got_i = [], []
    for start, d, i in iter_exact_knn(
        torch.from_numpy(x), torch.from_numpy(x), 7, exclude_self=exclude_self, chunk_size=9, block_bytes=1
    ):
        assert start == sum(len(b) for b in got_i)
        got_d.append(d.numpy())
        got_i.append(i.numpy())
    ed, ei = brute_force(x, x, 7, exclude_self)
    np.testing.assert_array_equal(np.concatenate(got_i), ei)
    np.testing.assert_allclose(np.concatenate(got_d), ed, rtol=1e-5, atol=1e-5)


def test_symmetric_tiles_match_brute_force_float64():
    # Several symmetric tiles (chunk 16 over 70 points), float64 input: each tile pair feeds rows and columns.
    x = np.random.default_rng(5).normal(size=(70, 3))
    d, i = exact_knn(x, x, 9, exclude_self=True, chunk_size=16)
    ed, ei = brute_force(x, x, 9, exclude_self=True)
    np.testing.assert_array_equal(i.numpy(), ei)
    np.testing.assert_allclose(d.numpy(), ed, rtol=1e-6, atol=1e-6)
