"""pick_threshold against hand-computed cases and a brute force over every pair; calibrate() on a run."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import smartmine
from smartmine.inference import InferenceError, calibrate, load_calibration, pick_threshold, save_calibration


def _brute_force(x: np.ndarray, labels: np.ndarray, target: float) -> dict | None:
    """Every threshold equal to some same-pair distance; max recall among precision >= target."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    d = np.array([np.sqrt(((x[i] - x[j]) ** 2).sum()) for i, j in pairs])
    same = np.array([labels[i] == labels[j] for i, j in pairs])
    best = None
    for t in sorted(set(d[same].tolist())):
        tp, fp = int((same & (d <= t)).sum()), int((~same & (d <= t)).sum())
        p, r = tp / (tp + fp), tp / int(same.sum())
        if p >= target and (best is None or r > best["recall"]):
            best = {"threshold": t, "precision": p, "recall": r}
    return best


def test_hand_computed_line_examples() -> None:
    # x = 0, 1, 3, 4 with classes a a b b: the two same pairs at distance 1, every different pair farther.
    r = pick_threshold(np.array([[0.0], [1.0], [3.0], [4.0]]), np.array([0, 0, 1, 1]), 0.99)
    assert r == {"threshold": 1.0, "precision": 1.0, "recall": 1.0, "same_pairs": 2, "different_pairs": 4}
    # x = 0, 1, 2, 3 with classes a b a b: same pairs at 2; at t = 2 the 3 different pairs at distance 1 count too.
    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 1, 0, 1])
    r = pick_threshold(x, y, 0.4)
    assert r["threshold"] == 2.0 and r["precision"] == pytest.approx(0.4) and r["recall"] == 1.0
    with pytest.raises(InferenceError, match=r"no distance threshold reaches precision 0.5 .*best is 0.400"):
        pick_threshold(x, y, 0.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_matches_brute_force_over_all_pairs_with_ties(seed: int, target: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 40))
    labels = rng.integers(0, 4, size=n)
    # integer coordinates: many exactly tied distances, computed exactly by both methods
    x = (labels[:, None] * 2 + rng.integers(-3, 4, size=(n, 3))).astype(np.float64)
    want = _brute_force(x, labels, target)
    if want is None:
        with pytest.raises(InferenceError):
            pick_threshold(x, labels, target, chunk=7)
        return
    got = pick_threshold(x, labels, target, chunk=7)  # several row chunks
    assert got["threshold"] == pytest.approx(want["threshold"], abs=1e-9)
    assert got["precision"] == pytest.approx(want["precision"]) and got["recall"] == pytest.approx(want["recall"])
    assert got["same_pairs"] + got["different_pairs"] == n * (n - 1) // 2


def test_without_same_class_pairs_it_is_refused() -> None:
    with pytest.raises(InferenceError, match="no two images share a class"):
        pick_threshold(np.eye(3), np.arange(3))


def test_calibrate_a_run_and_store_it(photo_run, small_run, tmp_path) -> None:
    run, _ = photo_run
    model = smartmine.load(run)
    cal = calibrate(model, 0.3, progress=False)
    emb, ds = model.embed_split("test", progress=False)
    want = pick_threshold(emb, ds.labels, 0.3)
    assert cal.threshold == want["threshold"] and cal.images == len(ds)
    assert cal.checkpoint_sha256 == model.checkpoint_sha256
    path = save_calibration(tmp_path, cal)
    assert json.loads(path.read_text())["threshold"] == cal.threshold
    other = smartmine.load(small_run)
    save_calibration(other.run_dir, cal)  # a calibration of another checkpoint is ignored
    assert load_calibration(other) is None
