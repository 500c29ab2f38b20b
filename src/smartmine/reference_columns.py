"""Which references a table of final test metrics sets the model beside, and what its difference columns are called.

The CLI's end-of-run table (:func:`smartmine.cli.results_table`, also in ``results.md``) and report.html's summary
table both compare the trained model with the raw-pixel baseline (``eval.baseline``) and the untrained model
(``eval.untrained_baseline``) when the run has them; one rule names their columns so the two tables never disagree.
Plain Python: the CLI imports it before torch.
"""

from __future__ import annotations

from collections.abc import Mapping

REFERENCE_NAMES = ("raw pixels", "untrained model")
"""Column names of the references, in table order."""


def reference_columns(
    baseline: Mapping[str, float] | None, untrained: Mapping[str, float] | None
) -> list[tuple[str, Mapping[str, float], str]]:
    """The references present, in table order, each as ``(name, metrics, difference header)``.

    Args:
        baseline: the raw-pixel baseline's metrics, or ``None`` / empty when the run has none.
        untrained: the untrained model's metrics, or ``None`` / empty.

    Returns:
        One entry per reference present. With a single reference its difference column is ``"difference"``; with
        both, each difference column names its reference (``"vs raw pixels"``, ``"vs untrained model"``), since two
        columns called ``difference`` could not be told apart.
    """
    present = [(name, ref) for name, ref in zip(REFERENCE_NAMES, (baseline, untrained), strict=True) if ref]
    return [(name, ref, "difference" if len(present) == 1 else f"vs {name}") for name, ref in present]
