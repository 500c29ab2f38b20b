"""benchmarks/cub100_frozen.py on synthetic features: every configuration trains and reports, the smart ones leave
the warm-up after one epoch with the κ their configuration asks for, the default mines."""

from __future__ import annotations

import numpy as np
import pytest
from bench_modules import load


@pytest.fixture(scope="module")
def frozen():
    return load("cub100_frozen")


def features(n_classes=32, per_class=8, dim=48, seed=0):
    """Class centres with noise; the first half of the classes train, the second half test (as cub100)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    x = (centres[y] + 0.8 * rng.normal(size=(y.size, dim))).astype(np.float32)
    return x, y, (n_classes // 2) * per_class


CONFIG_NAMES = ["random_global", "smart_default", "smart_plan", "smart_paper", "margin_dw", "pml_margin_dw",
                "random_dense"]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_configuration_trains_and_reports(frozen, name):
    x, y, n_train = features()
    res = frozen.run_one(name, 0, x, y, n_train, epochs=2, hidden=0)
    rows = res["rows"]
    assert [r["epoch"] for r in rows] == [1, 2] and res["config"] == name
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("recall@1", "map@r", "nmi"))
    if name in ("smart_default", "smart_paper", "smart_plan"):
        assert rows[0]["kappa"] is None and rows[1]["kappa"] is not None  # one random warm-up epoch, then mined
        assert rows[1]["train_error"] is not None
    if name in ("smart_default", "smart_plan"):
        assert rows[1]["mined_triplets"] > 0  # auto κ starts where the plan fills
    if name == "smart_paper":
        assert rows[1]["kappa"] == 16.0  # the paper's κ₀ (on separable data it may mine nothing: the finding)
    if name in ("random_global", "random_dense"):
        assert rows[1]["kappa"] is None and rows[1]["mined_triplets"] == 0  # never leaves the warm-up


def test_summary_lists_configurations_and_baseline(frozen, tmp_path):
    import json

    x, y, n_train = features()
    res = frozen.run_one("random_global", 0, x, y, n_train, epochs=1, hidden=0)
    (tmp_path / "random_global__seed0.json").write_text(json.dumps(res))
    text = frozen.summarize(tmp_path, {"recall@1": 0.5, "map@r": 0.25, "nmi": 0.75})
    assert "| untrained features (1280-d, no head) | – | 25.0 | 50.0 | 75.0 |" in text
    assert "| random_global | 1 |" in text and "smart_default" not in text


def test_overrides_reach_the_config_and_tag_the_results(frozen, tmp_path):
    import json

    x, y, n_train = features()
    res = frozen.run_one("smart_default", 0, x, y, n_train, epochs=2, hidden=0,
                         overrides={"mining": {"index": "exact"}}, tag="exact")  # fmt: skip
    assert res["config"] == "smart_default+exact"
    assert res["rows"][1]["index"] == "exact" and res["rows"][1]["list_recall"] == 1.0  # exact lists are the truth
    plain = frozen.run_one("smart_default", 0, x, y, n_train, epochs=2, hidden=0)
    assert plain["config"] == "smart_default" and plain["rows"][1]["index"] == "fanng"
    for r in (res, plain):
        (tmp_path / f"{r['config']}__seed0.json").write_text(json.dumps(r))
    text = frozen.summarize(tmp_path, None)
    assert text.index("| smart_default | 1 |") < text.index("| smart_default+exact | 1 |")  # tagged runs last


def test_held_out_classes_are_scored_and_guard_mining(frozen, tmp_path):
    import json

    x, y, n_train = features()
    res = frozen.run_one("smart_plan_guarded", 0, x, y, n_train, epochs=3, hidden=0, holdout=4)
    rows = res["rows"]
    assert res["holdout_classes"] == 4
    for r in rows:
        assert 0.0 <= r["holdout_map@r"] <= 1.0 and r["guard_scale"] in (1.0, 0.5)
    (tmp_path / "smart_plan_guarded__seed0.json").write_text(json.dumps(res))
    text = frozen.summarize(tmp_path, None)
    best = max(rows, key=lambda r: r["holdout_map@r"])  # the selected epoch: best held-out MAP@R
    assert f"| {100 * best['map@r']:.1f} | {100 * best['recall@1']:.1f} ({best['epoch']}) |" in text
    with pytest.raises(SystemExit, match="holdout"):
        frozen.run_one("smart_plan_guarded", 0, x, y, n_train, epochs=1, hidden=0)


def test_dense_batches_train_on_more_than_the_plan(frozen):
    # Same seed, same plan: the in-batch additions change the trained head, so the metrics differ from the plain run.
    x, y, n_train = features()
    plain = frozen.run_one("random_global", 0, x, y, n_train, epochs=1, hidden=0)["rows"][-1]
    dense = frozen.run_one("random_dense", 0, x, y, n_train, epochs=1, hidden=0)["rows"][-1]
    assert dense["map@r"] != plain["map@r"]
