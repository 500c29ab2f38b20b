"""Config loading: every preset validates; unknown keys, wrong types and bad values are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from smartmine.cli import list_presets, preset_path
from smartmine.training.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_override,
)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads(name: str) -> None:
    raw = yaml.safe_load(preset_path(name).read_text())
    # Presets that point at datasets which are not on this machine still validate once the root exists.
    if raw.get("data", {}).get("root"):
        raw["data"]["root"] = "."
    cfg = config_from_dict(raw)
    assert isinstance(cfg, RunConfig)


def test_expected_presets_are_shipped() -> None:
    assert {"quickstart", "cub100", "smart_mining_cub", "smart_mining_cars", "sampling_matters_cub",
            "sampling_matters_sop"} <= set(list_presets())


def test_defaults_match_the_spec() -> None:
    cfg = RunConfig()
    assert cfg.mining.kappa == "auto" and cfg.mining.target_error == 0.5 and cfg.mining.window == 5
    assert cfg.mining.kappa_min == 1.0 and cfg.mining.kappa_max == 256.0
    assert cfg.mining.warmup_epochs == 2 and cfg.mining.mined_fraction == 0.5
    assert cfg.mining.extra_positives == 64 and cfg.mining.extra_negatives == 64
    assert cfg.loss.margin == 0.2 and cfg.loss.global_lambda == 1.0 and cfg.loss.global_t == 0.01
    assert cfg.loss.beta == 1.2 and cfg.loss.nu == 0.0


def test_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'mining.kapa'.*did you mean 'kappa'"):
        config_from_dict({"mining": {"kapa": 4}})
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        config_from_dict({"trian": {"epochs": 3}})


def test_wrong_types_are_named() -> None:
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer, got 'three'"):
        config_from_dict({"train": {"epochs": "three"}})
    with pytest.raises(ConfigError, match=r"train.amp: expected true or false"):
        config_from_dict({"train": {"amp": 1}})
    with pytest.raises(ConfigError, match=r"optim.lr: expected a number"):
        config_from_dict({"optim": {"lr": "fast"}})
    # ints are fine where floats are expected
    assert config_from_dict({"optim": {"lr": 1}}).optim.lr == 1.0
    # YAML reads 1e-5 (no dot) as a string: still the number, on the command line too; other strings are refused
    assert config_from_dict({}, ["optim.lr=1e-5"]).optim.lr == 1e-5
    assert config_from_dict({"mining": {"kappa": "2E+1"}}).mining.kappa == 20.0
    assert config_from_dict({"mining": {"kappa": "auto"}}).mining.kappa == "auto"
    with pytest.raises(ConfigError, match=r"optim.lr: expected a number, got 'nan'"):
        config_from_dict({"optim": {"lr": "nan"}})


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"mining.strategy: 'smrt' is not one of .*did you mean 'smart'"):
        config_from_dict({"mining": {"strategy": "smrt"}})
    with pytest.raises(ConfigError, match=r"mining.mined_fraction: must lie in \[0, 1\]"):
        config_from_dict({"mining": {"mined_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"train.epochs: must be positive"):
        config_from_dict({"train": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"mining.samples_per_class: must be >= 2"):
        config_from_dict({"mining": {"samples_per_class": 1}})
    with pytest.raises(ConfigError, match=r"mining.kappa_min .* exceeds mining.kappa_max"):
        config_from_dict({"mining": {"kappa_min": 300.0}})
    with pytest.raises(ConfigError, match=r"data.root: dataset 'cub200' needs a root"):
        config_from_dict({"data": {"name": "cub200"}})
    with pytest.raises(ConfigError, match=r"data.root: '/no/such/dir' does not exist"):
        config_from_dict({"data": {"name": "cub100", "root": "/no/such/dir"}})


def test_overrides_parse_yaml_values() -> None:
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("mining.k=null") == (["mining", "k"], None)
    assert parse_override("eval.ks=[1, 10]") == (["eval", "ks"], [1, 10])
    cfg = config_from_dict({"train": {"epochs": 9}}, ["train.epochs=2", "mining.index=exact", "seed=7"])
    assert cfg.train.epochs == 2 and cfg.mining.index == "exact" and cfg.seed == 7
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean 'epochs'"):
        config_from_dict({}, ["train.epoch=2"])


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = config_from_dict({"mining": {"kappa": 4.0}, "eval": {"ks": [1, 5]}})
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'train.epocs'"):
        load_config(typo)


def test_index_options_reach_the_index() -> None:
    from smartmine.training.builders import index_factory

    cfg = config_from_dict({"mining": {"index": "fanng", "index_options": {"search_budget": 1024, "search_ef": 40}}})
    index = index_factory(cfg, torch.device("cpu"))()
    assert (index.search_budget, index.search_ef, index.seed) == (1024, 40, cfg.seed)
    cfg = config_from_dict({"mining": {"index": "exact", "index_options": {"chunk_size": 128}}})
    assert index_factory(cfg, torch.device("cpu"))().chunk_size == 128


def test_auto_index_picks_exact_up_to_the_threshold_and_on_a_gpu() -> None:
    from smartmine.index.exact import ExactIndex
    from smartmine.index.fanng import FanngIndex
    from smartmine.training.builders import AUTO_EXACT_MAX_POINTS, index_factory, resolve_index

    cfg = config_from_dict({})
    assert cfg.mining.index == "auto" and AUTO_EXACT_MAX_POINTS == 200_000
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert resolve_index(cfg, cpu, 200_000) == "exact"
    assert resolve_index(cfg, cpu, 200_001) == "fanng"
    assert resolve_index(cfg, gpu, 5_000_000) == "exact"
    assert isinstance(index_factory(cfg, cpu, 4_080)(), ExactIndex)
    fanng = index_factory(cfg, cpu, 250_000)()
    assert isinstance(fanng, FanngIndex) and fanng.seed == cfg.seed
    # A named index is used whatever the size.
    assert resolve_index(config_from_dict({"mining": {"index": "fanng"}}), cpu, 10) == "fanng"
    assert resolve_index(config_from_dict({"mining": {"index": "exact"}}), cpu, 10**7) == "exact"
    with pytest.raises(ValueError, match=r"n_points: mining\.index=auto needs the training-set size"):
        index_factory(cfg, cpu)


def test_auto_index_refuses_index_options() -> None:
    named = r"mining\.index_options: need a named mining\.index \(exact, fanng or faiss\)"
    with pytest.raises(ConfigError, match=named):
        config_from_dict({"mining": {"index_options": {"search_budget": 1024}}})
    choices = r"mining\.index: 'fannng' is not one of auto, exact, fanng, faiss \(did you mean 'fanng'\?\)"
    with pytest.raises(ConfigError, match=choices):
        config_from_dict({"mining": {"index": "fannng"}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"serch_budget": 10}, r"mining\.index_options\.serch_budget: not an option of FanngIndex.*'search_budget'"),
        ({"seed": 3}, r"mining\.index_options\.seed: not an option"),  # the trainer seeds the index itself
        ({"search_budget": 0}, r"mining\.index_options: search_budget: expected an integer >= 1, got 0"),
        ({"max_degree": "many"}, r"mining\.index_options: max_degree: expected an integer, got 'many'"),
    ],
)
def test_bad_index_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"mining": {"index": "fanng", "index_options": options}})


def test_faiss_options_without_faiss_are_named(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    with pytest.raises(ConfigError, match=r"eval\.kmeans_backend: 'faiss' needs the faiss package"):
        config_from_dict({"eval": {"kmeans_backend": "faiss"}})
    with pytest.raises(ConfigError, match=r"mining\.index: 'faiss' needs the faiss package"):
        config_from_dict({"mining": {"index": "faiss"}})
    # Unused settings do not need it: NMI off, or an in-batch strategy that builds no index.
    config_from_dict({"eval": {"kmeans_backend": "faiss", "compute_nmi": False}})
    config_from_dict({"mining": {"index": "faiss", "strategy": "semihard"}})


def test_kappa_auto_and_controller_choices() -> None:
    cfg = config_from_dict({"mining": {"kappa": 4}})
    assert cfg.mining.kappa == 4.0 and cfg.mining.controller == "steered" and cfg.mining.selection == "semihard"
    assert cfg.mining.error_counts == "mined"
    with pytest.raises(ConfigError, match=r"mining.kappa: expected a number > 0 or 'auto', got 'fast'"):
        config_from_dict({"mining": {"kappa": "fast"}})
    with pytest.raises(ConfigError, match=r"mining.kappa: must be positive"):
        config_from_dict({"mining": {"kappa": -1}})
    with pytest.raises(ConfigError, match=r"mining.kappa: 'auto' needs mining.adaptive=true"):
        config_from_dict({"mining": {"adaptive": False}})
    with pytest.raises(ConfigError, match=r"mining.kappa: 'auto' needs .*controller=steered"):
        config_from_dict({"mining": {"controller": "legacy"}})
    with pytest.raises(ConfigError, match=r"mining.controller: 'legasy' is not one of .*did you mean 'legacy'"):
        config_from_dict({"mining": {"controller": "legasy", "kappa": 16}})


def test_kappa_max_change_reaches_the_steered_controller() -> None:
    from smartmine.training.builders import build_smart_miner

    cfg = config_from_dict({"mining": {"strategy": "smart", "kappa_max_change": 2}})
    miner = build_smart_miner(cfg, torch.device("cpu"), 100)
    assert miner.controller.max_change == 2.0
    assert config_from_dict({}).mining.kappa_max_change == 4.0
    with pytest.raises(ConfigError, match=r"mining.kappa_max_change: must be a finite number >= 2, got 1.5"):
        config_from_dict({"mining": {"kappa_max_change": 1.5}})


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"backbone": "googlnet"}, r"model\.backbone: unknown backbone 'googlnet' \(did you mean 'googlenet'\?\)"),
        ({"options": {"in_chanels": 1}}, r"model\.options: backbone 'small_cnn' has no option 'in_chanels' "
                                         r"\(did you mean 'in_channels'\?\)"),
    ],
)
def test_backbone_and_its_options_are_checked_when_the_config_is_read(model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": model})


def test_dataset_options_are_checked_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError, match=r"data\.options\.variants_per_fce: not an option of dataset 'glyphs' .*"
                                          r"\(did you mean 'variants_per_face'\?\)"):
        config_from_dict({"data": {"options": {"variants_per_fce": 2}}})
    assert config_from_dict({"data": {"options": {"variants_per_face": 2}}}).data.options == {"variants_per_face": 2}


def test_cautious_start_reaches_the_controller() -> None:
    from smartmine.training.builders import build_smart_miner

    cpu = torch.device("cpu")
    assert build_smart_miner(config_from_dict({}), cpu, 100).controller.cautious_start is True
    off = config_from_dict({"mining": {"cautious_start": False}})
    assert build_smart_miner(off, cpu, 100).controller.cautious_start is False
    with pytest.raises(ConfigError, match=r"mining\.cautious_start"):
        config_from_dict({"mining": {"cautious_start": "maybe"}})


def test_list_extras_reach_the_miner_and_negative_counts_are_named() -> None:
    from smartmine.training.builders import build_smart_miner

    cfg = config_from_dict({"mining": {"extra_positives": 32, "extra_negatives": 48}})
    miner = build_smart_miner(cfg, torch.device("cpu"), 100)
    assert (miner.extra_positives, miner.extra_negatives) == (32, 48)
    default = build_smart_miner(RunConfig(), torch.device("cpu"), 100)
    assert (default.extra_positives, default.extra_negatives) == (64, 64)
    for key in ("extra_positives", "extra_negatives"):
        with pytest.raises(ConfigError, match=rf"mining.{key}: must be >= 0, got -1"):
            config_from_dict({"mining": {key: -1}})


def test_head_init_choices_are_named() -> None:
    # auto (the default) follows model.pretrained, and so does freeze_bn's null; read configs hold the resolved values
    assert RunConfig().model.head_init == "auto" and RunConfig().model.freeze_bn is None
    scratch = config_from_dict({}).model
    assert (scratch.head_init, scratch.freeze_bn) == ("random", False)
    pretrained = config_from_dict({"model": {"backbone": "efficientnet_lite0", "pretrained": True}}).model
    assert (pretrained.head_init, pretrained.freeze_bn) == ("pca", True)
    explicit = {"backbone": "efficientnet_lite0", "pretrained": True, "head_init": "random", "freeze_bn": False}
    kept = config_from_dict({"model": explicit}).model
    assert (kept.head_init, kept.freeze_bn) == ("random", False)
    assert config_from_dict({"model": {"head_init": "pca"}}).model.head_init == "pca"
    with pytest.raises(ConfigError, match=r"model.head_init: 'pcaa' is not one of auto, random, pca.*did you"):
        config_from_dict({"model": {"head_init": "pcaa"}})
    with pytest.raises(ConfigError, match=r"model.head_init_images: must be positive, got 0"):
        config_from_dict({"model": {"head_init_images": 0}})
