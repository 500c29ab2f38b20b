"""The results table the CLI prints and writes to results.md: the model next to its references."""

from __future__ import annotations

from smartmine.cli import results_table


def test_model_only() -> None:
    table = results_table({"recall@1": 0.5}, None)
    assert table.splitlines() == ["| metric (unseen classes) | smartmine |", "|---|---|", "| recall@1 | 0.500 |"]


def test_raw_pixels_keep_the_quick_start_layout() -> None:
    table = results_table({"recall@1": 0.75, "map@r": 0.5}, {"recall@1": 0.5})
    assert table.splitlines() == [
        "| metric (unseen classes) | smartmine | raw pixels | difference |",
        "|---|---|---|---|",
        "| recall@1 | 0.750 | 0.500 | +0.250 |",
        "| map@r | 0.500 | | |",  # no raw-pixel value for this metric
    ]


def test_both_references_each_with_its_difference() -> None:
    table = results_table({"recall@1": 0.625}, {"recall@1": 0.5}, untrained={"recall@1": 0.75})
    assert table.splitlines() == [
        "| metric (unseen classes) | smartmine | raw pixels | vs raw pixels | untrained model | vs untrained model |",
        "|---|---|---|---|---|---|",
        "| recall@1 | 0.625 | 0.500 | +0.125 | 0.750 | -0.125 |",
    ]


def test_untrained_only() -> None:
    table = results_table({"recall@1": 0.625}, None, untrained={"recall@1": 0.5})
    assert table.splitlines()[0] == "| metric (unseen classes) | smartmine | untrained model | difference |"
    assert table.splitlines()[2] == "| recall@1 | 0.625 | 0.500 | +0.125 |"
