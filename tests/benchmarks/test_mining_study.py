"""benchmarks/mining_study.py without training: every configuration resolves to a valid config, the held-out overlay,
and the summary's selected columns (the epoch of the best held-out MAP@R)."""

from __future__ import annotations

import json

import pytest
from bench_modules import load


@pytest.fixture(scope="module")
def study():
    return load("mining_study")


def test_every_configuration_is_a_valid_config(study):
    from smartmine.training.config import config_from_dict

    for name in study.CONFIGS:
        if name == "smart_plan_guarded":
            continue
        cfg = config_from_dict(study.config_for(name))
        assert cfg.data.holdout_classes == 0 and cfg.train.best_metric == "recall@1"
        # Only the default smart mining and random_dense mine their batches; the baselines keep the plan alone.
        dense = name in ("smart_default", "random_dense")
        assert cfg.mining.batch_mining in (("auto", "semihard") if dense else ("none", "auto"))
        if cfg.mining.strategy == "smart" and not dense and not name.startswith("pml_"):  # peers: their own loop
            assert cfg.mining.batch_mining == "none", name
    with pytest.raises(SystemExit, match="holdout"):
        study.config_for("smart_plan_guarded")


def test_holdout_overlay(study):
    from smartmine.training.config import config_from_dict

    guarded = config_from_dict(study.config_for("smart_plan_guarded", 17))
    default = config_from_dict(study.config_for("smart_plan", 17))
    assert guarded.mining.holdout_patience == 2 and default.mining.holdout_patience == 0
    for cfg in (guarded, default):
        assert cfg.data.holdout_classes == 17 and cfg.train.best_metric == "holdout_map@r"
    same = {k: v for k, v in vars(guarded.mining).items() if k != "holdout_patience"}
    assert same == {k: v for k, v in vars(default.mining).items() if k != "holdout_patience"}


def test_summary_reports_the_epoch_the_held_out_classes_pick(study, tmp_path):
    rows = [{"epoch": e, "recall@1": r, "map@r": m, "nmi": 0.5, "holdout_map@r": h}
            for e, r, m, h in [(1, 0.5, 0.2, 0.30), (2, 0.6, 0.3, 0.35), (3, 0.7, 0.25, 0.32)]]  # fmt: skip
    for seed in (0, 1):
        (tmp_path / f"random_global__seed{seed}.json").write_text(json.dumps(
            {"config": "random_global", "seed": seed, "machine": "test", "run_seconds": 1.0, "rows": rows,
             "resolved": {"train": {"epochs": 3}}}))
    text = study.summarize(tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| configuration"))
    assert header.endswith("| s/run | selected MAP@R | selected R@1 (epoch) |")
    # final epoch 3 (25.0 / 70.0); the held-out classes pick epoch 2 (30.0 / 60.0)
    row = "| random_global | 2 | 25.0 ± 0.0 | 70.0 ± 0.0 | 50.0 ± 0.0 | 3 | 1 | 30.0 ± 0.0 | 60.0 ± 0.0 (2.0) |"
    assert row in text


def test_exploration_overrides_need_a_tag_and_nest_yaml_values(study):
    assert study._parse_sets(["mining.kappa_min=0.25", "mining.mined_fraction=1", "data.options.max_shift=3"]) == {
        "mining": {"kappa_min": 0.25, "mined_fraction": 1},
        "data": {"options": {"max_shift": 3}},
    }
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        study._parse_sets(["mining.kappa_min"])
    with pytest.raises(SystemExit):  # argparse error: an override without a tag would overwrite the plain results
        study.main(["--configs", "random_global", "--set", "mining.kappa_min=0.5"])


def test_side_runs_never_replace_the_documented_plot(study, tmp_path):
    assert study.default_plot_path(study.STUDY_RESULTS) == study.REPO / "docs" / "mining_study_curves.png"
    assert study.default_plot_path(tmp_path / "explore") == tmp_path / "explore" / "curves.png"
