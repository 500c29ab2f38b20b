"""retrieval_metrics: hand-computed cases, pytorch-metric-learning's AccuracyCalculator, scikit-learn's NMI."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from smartmine.evaluation.metrics import retrieval_metrics

# Six points on a line, classes A = 0 and B = 1. Ranked neighbours (query excluded, ties by index):
#   q0 (x=0, A): 1 A, 3 B(x=3), 4 A, 10 B, 11 B   -> hits T F T F F
#   q1 (x=1, A): 0 A, 3 B, 4 A, ...                -> T F T
#   q2 (x=3, B): 4 A, 1 A, 0 A, 10 B, 11 B          -> F F F T T
#   q3 (x=4, A): 3 B, 1 A, 0 A, ...                -> F T T
#   q4 (x=10, B): 11 B, 4 A, 3 B, ...              -> T F T
#   q5 (x=11, B): 10 B, 4 A, 3 B, ...              -> T F T
# R = 2 for everyone. Recall@1 = 4/6, @2 = 5/6, @4 = 6/6. R-precision = (.5+.5+0+.5+.5+.5)/6 = 5/12.
# MAP@R: q0, q1, q4, q5: (1/1)/2 = .5; q2: 0; q3: (1/2)/2 = .25  -> 2.25/6 = 0.375. P@1 = 4/6.
LINE_X = np.array([0.0, 1.0, 3.0, 4.0, 10.0, 11.0], dtype=np.float32)[:, None]
LINE_Y = np.array([0, 0, 1, 0, 1, 1])
LINE_EXPECTED = {
    "recall@1": 4 / 6,
    "recall@2": 5 / 6,
    "recall@4": 1.0,
    "r_precision": 5 / 12,
    "map@r": 0.375,
    "precision@1": 4 / 6,
}


def assert_metrics(got: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_hand_computed_line(backend, chunk_size):
    got = retrieval_metrics(LINE_X, LINE_Y, ks=(1, 2, 4), compute_nmi=False, backend=backend, chunk_size=chunk_size)
    assert_metrics(got, LINE_EXPECTED)
    assert got["num_queries"] == 6 and got["num_queries_without_positive"] == 0
    assert "nmi" not in got


def test_single_item_class_is_excluded_and_counted():
    # A far-away point of its own class: it has no positive, so it is left out; the others' top-4 are unchanged.
    x = np.concatenate([LINE_X, [[20.0]]]).astype(np.float32)
    y = np.concatenate([LINE_Y, [7]])
    got = retrieval_metrics(x, y, ks=(1, 2, 4), compute_nmi=False)
    assert_metrics(got, LINE_EXPECTED)
    assert got["num_queries"] == 7 and got["num_queries_without_positive"] == 1


def test_hand_computed_reference_set():
    # Gallery = the six line points. q=2 (A): 1 A (d²=1), 3 B (1), 0 A (4), 4 A (4), ... ties by index; R = 3
    #   -> R-precision 2/3, MAP@R (1 + 2/3)/3 = 5/9.
    # q=10.5 (B): 10 B (.25), 11 B (.25), 4 A, 3 B; R = 3 -> R-precision 2/3, MAP@R (1 + 1)/3 = 2/3.
    q = np.array([[2.0], [10.5]], dtype=np.float32)
    got = retrieval_metrics(
        q, [0, 1], ks=(1, 2), reference_embeddings=LINE_X, reference_labels=LINE_Y, compute_nmi=False
    )
    assert_metrics(got, {"recall@1": 1.0, "recall@2": 1.0, "r_precision": 2 / 3, "map@r": 11 / 18, "precision@1": 1.0})
    assert got["num_queries"] == 2 and got["num_queries_without_positive"] == 0


def _clustered(seed: int, n: int, n_classes: int, dim: int = 8, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    centres = rng.normal(size=(n_classes, dim))
    x = (centres[y] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    return x, y


def _pml(query, query_labels, reference=None, reference_labels=None):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    if reference is None:
        return calc.get_accuracy(query, query_labels)
    return calc.get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)


def _assert_matches_pml(ours: dict, pml: dict) -> None:
    assert ours["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-12)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_matches_pml_self_query(seed, backend):
    x, y = _clustered(seed, 600, 40)
    y[:3] = [1000, 1001, 1002]  # singleton classes: excluded by both
    ours = retrieval_metrics(x, y, compute_nmi=False, backend=backend, chunk_size=97)
    _assert_matches_pml(ours, _pml(x, y))
    assert ours["num_queries_without_positive"] == 3


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_matches_pml_reference_set(seed, backend):
    x, y = _clustered(seed, 700, 30)
    q, qy, g, gy = x[:200], y[:200].copy(), x[200:], y[200:]
    qy[0] = 999  # a query class absent from the gallery: excluded by both
    ours = retrieval_metrics(
        q, qy, reference_embeddings=g, reference_labels=gy, compute_nmi=False, backend=backend, chunk_size=33
    )
    _assert_matches_pml(ours, _pml(q, qy, g, gy))
    assert ours["num_queries_without_positive"] == 1


def test_recall_at_k_against_numpy():
    x, y = _clustered(5, 300, 25, spread=1.5)
    ks = (1, 3, 10, 50)
    got = retrieval_metrics(x, y, ks=ks, compute_nmi=False)
    d = ((x[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    same = y[order] == y[:, None]
    for k in ks:
        assert got[f"recall@{k}"] == pytest.approx(same[:, :k].any(axis=1).mean(), abs=1e-12)


def test_nmi_matches_sklearn():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, y = _clustered(3, 400, 12, spread=0.2)
    got = retrieval_metrics(x, y, seed=4)
    clusters = KMeans(n_clusters=12, n_init=1, random_state=4).fit_predict(x)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters), abs=1e-12)
    # Independent of the formula: well-separated clusters give NMI near 1, labels unrelated to the data near 0.
    assert got["nmi"] > 0.8
    shuffled = np.random.default_rng(0).permutation(y)
    assert retrieval_metrics(x, shuffled, seed=4)["nmi"] < 0.2


def test_nmi_with_faiss_kmeans_matches_faiss_directly():
    faiss = pytest.importorskip("faiss")
    from sklearn.metrics import normalized_mutual_info_score

    x, y = _clustered(3, 400, 12, spread=0.2)
    got = retrieval_metrics(x, y, seed=4, kmeans_backend="faiss")
    km = faiss.Kmeans(x.shape[1], 12, niter=300, nredo=1, seed=4, max_points_per_centroid=len(x), verbose=False)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    clusters = km.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0]
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters), abs=1e-12)
    assert got["nmi"] > 0.8
    shuffled = np.random.default_rng(0).permutation(y)
    assert retrieval_metrics(x, shuffled, seed=4, kmeans_backend="faiss")["nmi"] < 0.2
    with pytest.raises(ValueError, match="kmeans_backend"):
        retrieval_metrics(x, y, kmeans_backend="scipy")


def test_torch_and_numpy_inputs_agree_and_are_deterministic():
    x, y = _clustered(7, 250, 20)
    a = retrieval_metrics(x, y, compute_nmi=False)
    assert retrieval_metrics(x, y, compute_nmi=False) == a
    # Another chunking only changes the order of the float64 sums.
    b = retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), compute_nmi=False, chunk_size=13)
    assert b == pytest.approx(a, abs=1e-12)


def test_ties_ranked_by_index():
    # A query at the origin, four gallery points all at distance 1: the two of another class have the lower indices,
    # so with ties ranked by index they come first.
    gallery = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32)
    gy = np.array([1, 1, 0, 0])
    got = retrieval_metrics(
        np.zeros((1, 2), np.float32),
        [0],
        ks=(1, 2, 3),
        reference_embeddings=gallery,
        reference_labels=gy,
        compute_nmi=False,
    )
    # R = 2: first two positions hold class 1 -> R-precision 0, MAP@R 0; recall@3 = 1.
    assert_metrics(got, {"recall@1": 0.0, "recall@2": 0.0, "recall@3": 1.0, "r_precision": 0.0, "map@r": 0.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embeddings": np.zeros((6, 1), np.float32), "labels": LINE_Y[:5]}, "labels"),
        ({"embeddings": np.zeros(6, np.float32)}, "embeddings"),
        ({"embeddings": np.where(np.arange(6)[:, None] == 2, np.nan, LINE_X)}, "embeddings"),
        ({"embeddings": np.where(np.arange(6)[:, None] == 2, np.inf, LINE_X)}, "embeddings"),
        ({"labels": LINE_Y.astype(np.float64)}, "labels"),
        ({"ks": (1, 6)}, "ks"),
        ({"ks": ()}, "ks"),
        ({"ks": (0,)}, "ks"),
        ({"labels": np.arange(6)}, "labels"),  # every class a singleton: nothing to evaluate
        ({"reference_embeddings": LINE_X}, "reference_labels"),
        ({"reference_embeddings": LINE_X, "reference_labels": LINE_Y, "ks": (7,)}, "ks"),
        ({"reference_embeddings": np.zeros((6, 2), np.float32), "reference_labels": LINE_Y}, "reference_embeddings"),
        ({"reference_embeddings": LINE_X, "reference_labels": LINE_Y[:4]}, "reference_labels"),
        ({"reference_embeddings": LINE_X, "reference_labels": LINE_Y + 5}, "labels"),  # no query class in gallery
        ({"backend": "annoy"}, "backend"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"embeddings": LINE_X, "labels": LINE_Y, "ks": (1, 2), "compute_nmi": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(**args)


def test_faiss_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match="faiss"):
        retrieval_metrics(LINE_X, LINE_Y, ks=(1,), compute_nmi=False, backend="faiss")
