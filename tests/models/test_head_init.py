"""The PCA head (``model.head_init: pca``) against scikit-learn's PCA and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from smartmine.models import Embedder, init_head_from_pca_, pca_head


def _anisotropic(n: int = 300, f: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(5.0, 0.2, f)  # distinct variances: the principal directions are well defined
    rotation, _ = np.linalg.qr(rng.normal(size=(f, f)))
    return (rng.normal(size=(n, f)) * scales) @ rotation.T + rng.normal(size=f) * 3.0


def test_directions_bias_and_variance_match_sklearn() -> None:
    x = _anisotropic()
    ref = PCA(n_components=4, svd_solver="full").fit(x)
    head = pca_head(torch.from_numpy(x), 4)
    w = head.weight.double().numpy()
    # the same directions up to sign, in the same order
    signs = np.sign((w * ref.components_).sum(axis=1))
    np.testing.assert_allclose(w, ref.components_ * signs[:, None], atol=1e-5)
    assert head.explained == pytest.approx(ref.explained_variance_ratio_.sum(), rel=1e-6)
    # the head maps every row to its PCA coordinates (sklearn's transform, same signs)
    out = x @ w.T + head.bias.double().numpy()
    np.testing.assert_allclose(out, ref.transform(x) * signs, atol=1e-4)


def test_sign_and_hand_worked_two_d_case() -> None:
    # Points spread along x with a little spread along y: the first direction is ±x, fixed to +x by the sign rule
    # (its largest coordinate is positive); mean (2, 1), so bias = −w·mean = −2.
    x = torch.tensor([[-1.0, 1.2], [5.0, 1.2], [0.0, 0.8], [4.0, 0.8]])  # x and y uncorrelated
    head = pca_head(x, 1)
    np.testing.assert_allclose(head.weight.numpy(), [[1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(head.bias.numpy(), [-2.0], atol=1e-6)
    # variances along x: 26/3, along y: 0.16/3
    assert head.explained == pytest.approx(26.0 / 26.16, rel=1e-6)


def test_init_copies_into_the_embedders_head() -> None:
    x = _anisotropic(f=10)
    model = Embedder(torch.nn.Identity(), feature_dim=10, embedding_dim=3, normalize=False)
    init_head_from_pca_(model, x)
    ref = PCA(n_components=3).fit(x)
    out = model(torch.from_numpy(x).float()).detach().double().numpy()
    signs = np.sign((model.head.weight.detach().double().numpy() * ref.components_).sum(axis=1))
    np.testing.assert_allclose(out, ref.transform(x) * signs, atol=1e-3)


def test_fewer_images_than_dimensions_still_give_orthonormal_rows() -> None:
    # 5 images in 12-d: 4 directions carry variance (sklearn's PCA(4)); the fifth row completes an orthonormal set
    x = _anisotropic(n=5, f=12)
    head = pca_head(x, 6)
    w = head.weight.double().numpy()
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-6)
    ref = PCA(n_components=4, svd_solver="full").fit(x)
    np.testing.assert_allclose(np.abs((w[:4] * ref.components_).sum(axis=1)), 1.0, atol=1e-6)
    assert head.explained == pytest.approx(1.0)
    # the rows beyond the data's rank give the same output for every image
    out = x @ w[4:].T + head.bias.double().numpy()[4:]
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_bad_inputs_are_named() -> None:
    x = _anisotropic(n=20, f=6)
    with pytest.raises(ValueError, match=r"embedding_dim: 8 exceeds the backbone's feature width 6"):
        pca_head(x, 8)
    with pytest.raises(ValueError, match=r"features: a PCA head needs at least 2 rows"):
        pca_head(x[:1], 2)
    bad = x.copy()
    bad[[2, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"features: 2 of 20 rows hold NaN or infinite values"):
        pca_head(bad, 2)
    with pytest.raises(ValueError, match=r"features: expected a 2-d"):
        pca_head(x[0], 2)
    model = Embedder(torch.nn.Identity(), feature_dim=7, embedding_dim=2)
    with pytest.raises(ValueError, match=r"features: width 6 does not match the head's input 7"):
        init_head_from_pca_(model, x)
    with pytest.raises(ValueError, match=r"features: expected a 2-D array \(N, F\), got shape \(6,\)"):
        init_head_from_pca_(model, x[0])
