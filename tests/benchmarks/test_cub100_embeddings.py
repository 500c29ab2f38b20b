"""benchmarks/cub100_embeddings.py: the PCA reduction against scikit-learn."""

from __future__ import annotations

import numpy as np
from bench_modules import load


def test_pca_normalised_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    mod = load("cub100_embeddings")
    x = np.random.default_rng(0).normal(size=(200, 30)) @ np.diag(np.linspace(3, 0.1, 30))
    got = mod.pca_normalised(x.astype(np.float32), 5)
    ref = PCA(n_components=5, svd_solver="full").fit_transform(x)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    signs = np.sign((got * ref).sum(0))  # each component is defined up to its sign
    np.testing.assert_allclose(got, ref * signs, atol=1e-4)
    assert got.dtype == np.float32 and got.shape == (200, 5)
