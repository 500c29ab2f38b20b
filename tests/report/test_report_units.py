"""The report's computations against independent re-derivations (SciPy, scikit-learn, brute force)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from sklearn.neighbors import NearestNeighbors

from smartmine.report import default_output, load_run
from smartmine.report.embedding_views import _prob_neg_closer, pair_distances, subsample
from smartmine.report.galleries import pick_epochs, retrieval_neighbours
from smartmine.report.run_data import metric_sort_key


@pytest.mark.parametrize(
    ("available", "expected"),
    [(range(1, 17), [4, 8, 12, 16]), ([2, 3], [2, 3]), (range(3, 11), [4, 6, 8, 10]), ([], [])],
)
def test_pick_epochs_spreads_like_the_paper(available, expected):
    assert pick_epochs(list(available)) == expected


def test_pair_distances_match_scipy():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=30)
    pos, neg = pair_distances(emb, labels)
    d = squareform(pdist(emb.astype(np.float64)))
    iu, ju = np.triu_indices(30, k=1)
    same = labels[iu] == labels[ju]
    np.testing.assert_allclose(np.sort(pos), np.sort(d[iu, ju][same]), atol=1e-5)
    np.testing.assert_allclose(np.sort(neg), np.sort(d[iu, ju][~same]), atol=1e-5)


def test_prob_neg_closer_matches_brute_force():
    rng = np.random.default_rng(1)
    pos, neg = rng.random(40), rng.random(55) + 0.3
    brute = np.mean(neg[None, :] < pos[:, None])
    assert _prob_neg_closer(pos, neg) == pytest.approx(brute)
    assert _prob_neg_closer(np.array([1.0]), np.array([0.5, 2.0])) == pytest.approx(0.5)
    assert np.isnan(_prob_neg_closer(np.array([]), neg))


def test_retrieval_neighbours_match_sklearn():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    labels = np.repeat(np.arange(12), 5)
    rows, nbr, dist = retrieval_neighbours(emb, labels, queries=6, k=4, seed=3)
    assert len(set(labels[rows].tolist())) == 6  # one query per distinct class
    ref_d, ref_i = NearestNeighbors(n_neighbors=5).fit(emb).kneighbors(emb[rows])
    np.testing.assert_array_equal(nbr, ref_i[:, 1:])  # the query itself is the nearest and is dropped
    np.testing.assert_allclose(dist, ref_d[:, 1:], atol=1e-4)


def test_subsample_is_seeded_and_sorted():
    a, b = subsample(100, 10, seed=5), subsample(100, 10, seed=5)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(subsample(7, 10, seed=0), np.arange(7))


def test_metric_order():
    keys = ["nmi", "recall@8", "map@r", "recall@1", "recall@16", "precision@1", "r_precision"]
    assert sorted(keys, key=metric_sort_key) == [
        "recall@1",
        "recall@8",
        "recall@16",
        "map@r",
        "r_precision",
        "precision@1",
        "nmi",
    ]


def test_default_output(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "b").mkdir()
    assert default_output([tmp_path / "runs" / "a"]) == tmp_path / "runs" / "a" / "report.html"
    assert default_output([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]) == tmp_path / "runs" / "comparison.html"
    # One run inside the other: the comparison goes next to the outer one, not into it.
    (tmp_path / "runs" / "a" / "inner").mkdir()
    pair = [tmp_path / "runs" / "a", tmp_path / "runs" / "a" / "inner"]
    assert default_output(pair) == tmp_path / "runs" / "comparison.html"


def test_load_run_tolerates_torn_and_broken_files(tmp_path: Path):
    run = tmp_path / "run"
    (run / "mined").mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,loss,recall@1\n1,0.5,0.25\n2,0.4,0.3")  # torn last line
    (run / "mined" / "epoch_001.json").write_text("{not json")
    (run / "mined" / "epoch_002.json").write_text(
        json.dumps({"epoch": 2, "strategy": "smart", "kappa": 4.0, "triplets": []})
    )
    (run / "baseline.json").write_text(json.dumps({"recall@1": 0.1, "note": "x"}))
    (run / "untrained.json").write_text("{torn")
    data = load_run(run)
    assert [r["epoch"] for r in data.metrics] == [1.0]
    assert data.final_metrics == {"recall@1": 0.25}
    assert data.baseline == {"recall@1": 0.1}
    assert [r.epoch for r in data.mined] == [2]
    text = " ".join(data.missing)
    assert "epoch_001.json could not be read" in text and "config.yaml is missing" in text
    assert "untrained.json could not be read" in text and data.untrained is None
    assert "unfinished or was interrupted: 1 epoch(s) logged" in text


def test_final_table_shows_both_references_with_differences(tmp_path: Path):
    from smartmine.report.build import _final_table

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,loss,recall@1\n1,0.5,0.625\n")
    (run / "baseline.json").write_text(json.dumps({"recall@1": 0.5}))
    (run / "untrained.json").write_text(json.dumps({"recall@1": 0.75}))
    table = _final_table(load_run(run))
    assert table.header == ["metric (unseen classes)", "model", "raw pixels", "vs raw pixels", "untrained model",
                            "vs untrained model"]
    assert table.rows == [["recall@1", "0.625", "0.500", "+0.125", "0.750", "-0.125"]]
