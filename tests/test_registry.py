"""The registry helper, and that configs accept whatever is registered (datasets, losses) without editing config.py."""

from __future__ import annotations

import pytest
import torch

from smartmine import _registry
from smartmine._registry import Registry, check_kwargs, did_you_mean
from smartmine.data import registry as data_registry
from smartmine.training import builders
from smartmine.training import registry as training_registry
from smartmine.training.config import ConfigError, config_from_dict


def test_did_you_mean_names_the_closest_choice_or_nothing():
    assert did_you_mean("fanng", ["exact", "fanng", "faiss"]) == " (did you mean 'fanng'?)"
    assert did_you_mean("fang", ["exact", "fanng", "faiss"]) == " (did you mean 'fanng'?)"
    assert did_you_mean("zzz", ["exact", "fanng"]) == ""


def test_registry_registers_finds_and_refuses():
    reg: Registry = Registry("widget")
    reg.register("round", lambda: "o")

    @reg.register("square")
    def square():
        return "□"

    assert reg.names() == ("round", "square") and "square" in reg and "oval" not in reg
    assert reg.get("square")() == "□"
    with pytest.raises(ValueError, match=r"^widget: 'sqare' is not one of round, square \(did you mean 'square'\?\)$"):
        reg.get("sqare")
    with pytest.raises(ValueError, match=r"^shape: 'x' is not one of round, square$"):
        reg.get("x", "shape")
    with pytest.raises(ValueError, match="widget 'round' is already registered"):
        reg.register("round", lambda: "O")
    reg.register("round", lambda: "O", overwrite=True)
    assert reg.get("round")() == "O"
    other = reg.copy()
    other.register("oval", lambda: "0")
    assert "oval" in other and "oval" not in reg


def test_check_kwargs_names_the_key_and_suggests():
    def make(size: int, *, colour: str = "red", seed: int = 0) -> None: ...

    check_kwargs(make, {"size": 1, "colour": "blue"}, "opts")
    with pytest.raises(ValueError, match=r"opts\.color: not an option of make \(did you mean 'colour'\?\); options: "
                                         r"size, colour, seed"):
        check_kwargs(make, {"color": "blue"}, "opts")
    with pytest.raises(ValueError, match=r"opts\.seed: not an option of make here \(smartmine sets it\)"):
        check_kwargs(make, {"seed": 3}, "opts", fixed=["seed"])

    def open_ended(a: int = 0, **rest) -> None: ...

    check_kwargs(open_ended, {"anything": 1}, "opts")  # **kwargs accepts any key


def test_a_registered_dataset_is_accepted_by_configs(monkeypatch):
    datasets = data_registry.DATASETS.copy()
    monkeypatch.setattr(data_registry, "DATASETS", datasets)
    glyphs = data_registry.get_dataset_spec("glyphs")
    with pytest.raises(ConfigError, match=r"data\.name: 'my_glyphs' is not one of .*did you mean 'glyphs'"):
        config_from_dict({"data": {"name": "my_glyphs"}})
    data_registry.register_dataset(data_registry.DatasetSpec("my_glyphs", glyphs.loader, "small", False))
    assert config_from_dict({"data": {"name": "my_glyphs"}}).data.name == "my_glyphs"
    # A file-backed registered dataset needs data.root, as the built-in ones do.
    data_registry.register_dataset(data_registry.DatasetSpec("my_photos", glyphs.loader, "photo", True))
    with pytest.raises(ConfigError, match=r"data\.root: dataset 'my_photos' needs a root path"):
        config_from_dict({"data": {"name": "my_photos"}})


def test_a_registered_loss_is_accepted_by_configs_and_built(monkeypatch):
    losses = training_registry.LOSSES.copy()
    monkeypatch.setattr(training_registry, "LOSSES", losses)
    monkeypatch.setattr(builders, "LOSSES", losses)

    class Half(torch.nn.Module):
        def forward(self, embeddings, labels, triplets):
            return embeddings.sum() * 0.5

        def active(self, embeddings, labels, triplets):
            return torch.ones(len(triplets[0]), dtype=torch.bool)

    losses.register("halved", lambda lc, num_classes: Half())
    cfg = config_from_dict({"loss": {"name": "halved", "global_weight": 0}})
    objective = builders.build_loss(cfg, num_classes=3)
    x = torch.ones(2, 2)
    assert float(objective(x, None, (torch.tensor([0]),) * 3)) == 2.0
    assert objective.active(x, None, (torch.tensor([0, 1]),) * 3).tolist() == [True, True]


def test_index_options_are_checked_against_the_registered_index():
    with pytest.raises(ConfigError, match=r"mining\.index_options\.chunksize: not an option of ExactIndex "
                                          r"\(did you mean 'chunk_size'\?\)"):
        config_from_dict({"mining": {"index": "exact", "index_options": {"chunksize": 8}}})


def test_registry_module_has_no_import_of_the_config_module_at_run_time():
    # The config module imports the registries; the reverse import exists only for type checking (no cycle).
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(training_registry))
    top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert all(n.module != "smartmine.training.config" for n in top_level)
    assert "did_you_mean" in dir(_registry)
