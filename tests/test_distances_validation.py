"""Distances against NumPy and hand-computed values; validation messages name the argument and the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartmine._validation import check_embeddings, check_labels, check_positive_int, check_triplets, empty_triplets
from smartmine.distances import (
    cosine_similarity_matrix,
    normalize,
    pairwise_distances,
    pairwise_sq_distances,
    row_distances,
)


def numpy_sq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_matches_numpy(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    got = pairwise_sq_distances(torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), numpy_sq(x, y), rtol=tol, atol=tol)
    plain = pairwise_distances(torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype), eps=0.0)
    np.testing.assert_allclose(plain.numpy(), np.sqrt(numpy_sq(x, y)), rtol=tol * 10, atol=tol * 10)


def test_hand_computed_values() -> None:
    # (0,0), (3,4), (0,1): distances 5, 1 and sqrt(9 + 9) = sqrt(18)
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    d2 = pairwise_sq_distances(x)
    assert d2[0, 1] == 25.0 and d2[0, 2] == 1.0 and d2[1, 2] == 18.0
    assert torch.all(torch.diagonal(d2) == 0)
    d = row_distances(x, torch.tensor([0, 1]), torch.tensor([1, 2]), eps=0.0)
    np.testing.assert_allclose(d.numpy(), [5.0, np.sqrt(18.0)])
    cos = cosine_similarity_matrix(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
    np.testing.assert_allclose(cos.numpy(), [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-7)
    np.testing.assert_allclose(normalize(torch.tensor([[3.0, 4.0]])).numpy(), [[0.6, 0.8]])


def test_gradients_finite_at_zero_distance() -> None:
    x = torch.tensor([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    d = pairwise_distances(x)
    assert d[0, 1].item() == pytest.approx(1e-4)  # sqrt(0 + 1e-8)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    r = row_distances(x, torch.tensor([0]), torch.tensor([1]))
    (g,) = torch.autograd.grad(r.sum(), x)
    assert torch.isfinite(g).all()


def test_half_precision_is_computed_in_float32() -> None:
    x = torch.nn.functional.normalize(torch.randn(16, 64), dim=1)
    ref = pairwise_sq_distances(x)
    got = pairwise_sq_distances(x.half())
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=5e-3)


def test_check_embeddings_messages() -> None:
    with pytest.raises(ValueError, match=r"emb: expected a 2-D array of shape \(N, D\), got shape \(3,\)"):
        check_embeddings(torch.zeros(3), "emb")
    with pytest.raises(ValueError, match="expected a floating-point dtype"):
        check_embeddings(torch.zeros(2, 2, dtype=torch.long))
    x = torch.zeros(4, 2)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf values in 1 row\\(s\\), first at row 2"):
        check_embeddings(x)
    with pytest.raises(ValueError, match="at least 3 rows"):
        check_embeddings(np.zeros((2, 2)), min_rows=3)
    assert isinstance(check_embeddings(np.zeros((2, 2))), torch.Tensor)


def test_check_labels_and_triplets_messages() -> None:
    with pytest.raises(ValueError, match="labels: expected an integer dtype, got torch.float32"):
        check_labels(torch.zeros(3))
    with pytest.raises(ValueError, match="labels: length 2 does not match the 3 embeddings"):
        check_labels([0, 1], n=3)
    assert check_labels(np.array([1, 2], dtype=np.int32)).dtype == torch.long
    with pytest.raises(ValueError, match=r"triplets.negatives: indices must lie in \[0, 3\), got range \[5, 5\]"):
        check_triplets((torch.tensor([0]), torch.tensor([1]), torch.tensor([5])), 3)
    with pytest.raises(ValueError, match="differ in length"):
        check_triplets((torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([2])), 3)
    a, p, n = empty_triplets()
    assert a.numel() == p.numel() == n.numel() == 0 and a.dtype == torch.long
    with pytest.raises(ValueError, match="k: expected an integer >= 1, got 0"):
        check_positive_int(0, "k")
    with pytest.raises(ValueError, match="k: expected an integer, got 2.5"):
        check_positive_int(2.5, "k")


def test_row_distances_backward_is_repeatable_with_many_repeated_rows():
    # A batch mined in the batch gathers the same rows hundreds of times; the gradient must not depend on thread
    # timing (the backward of x[i] accumulates in parallel on the CPU; index_select's backward does not).
    import torch

    from smartmine.distances import row_distances

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(192, 64, generator=g)
    i, j = torch.randint(0, 192, (6000,), generator=g), torch.randint(0, 192, (6000,), generator=g)
    grads = []
    for _ in range(8):
        x = x0.clone().requires_grad_(True)
        row_distances(x, i, j).sum().backward()
        grads.append(x.grad)
    assert all(torch.equal(grads[0], other) for other in grads[1:])
    # and the values are the plain differences' norms
    expect = torch.sqrt(((x0[i] - x0[j]) ** 2).sum(dim=1) + 1e-12)
    assert torch.allclose(row_distances(x0, i, j, eps=1e-12), expect, atol=1e-6)


def test_as_numpy_takes_tensors_arrays_and_lists() -> None:
    from smartmine._validation import as_numpy

    t = torch.tensor([[1.0, 2.0]], requires_grad=True)
    np.testing.assert_array_equal(as_numpy(t), np.array([[1.0, 2.0]], dtype=np.float32))
    assert as_numpy(t).dtype == np.float32
    assert as_numpy([[1, 2]], dtype=np.float64).dtype == np.float64
    arr = np.arange(3)
    assert as_numpy(arr) is arr  # no copy when nothing changes
