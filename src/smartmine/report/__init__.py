"""The visual report of a run (or a comparison of runs): ``build_report(runs, out) -> Path`` writes ``report.html``.

``smartmine report RUN [RUN ...] [--out FILE]`` calls :func:`build_report`. The page is static HTML with the figures
embedded (no scripts, no network): curves per epoch, a 2-D map of the test embeddings, pair-distance histograms,
mined-triplet and retrieval galleries; several runs give overlaid curves and a table of final metrics.
"""

from smartmine.report.build import build_report, default_output
from smartmine.report.run_data import RunData, load_run

__all__ = ["RunData", "build_report", "default_output", "load_run"]
