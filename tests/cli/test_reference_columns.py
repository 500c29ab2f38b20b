"""The one rule naming the reference columns of the CLI's results table and report.html's summary table."""

from smartmine.cli import results_table
from smartmine.reference_columns import reference_columns

PIXELS = {"recall@1": 0.25}
UNTRAINED = {"recall@1": 0.5}


def test_no_reference_gives_no_columns():
    assert reference_columns(None, None) == []
    assert reference_columns({}, {}) == []  # an empty metrics file counts as absent


def test_a_single_reference_has_a_plain_difference_column():
    assert reference_columns(PIXELS, None) == [("raw pixels", PIXELS, "difference")]
    assert reference_columns(None, UNTRAINED) == [("untrained model", UNTRAINED, "difference")]


def test_two_references_name_their_difference_columns_in_table_order():
    assert reference_columns(PIXELS, UNTRAINED) == [
        ("raw pixels", PIXELS, "vs raw pixels"),
        ("untrained model", UNTRAINED, "vs untrained model"),
    ]


def test_the_cli_table_uses_the_rule():
    table = results_table({"recall@1": 0.75}, PIXELS, untrained=UNTRAINED)
    header, _, row = table.splitlines()
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["metric (unseen classes)", "smartmine", "raw pixels", "vs raw pixels", "untrained model",
                     "vs untrained model"]  # fmt: skip
    assert row == "| recall@1 | 0.750 | 0.250 | +0.500 | 0.500 | +0.250 |"
