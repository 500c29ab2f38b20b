"""The one error type of :mod:`smartmine.inference`."""

from __future__ import annotations


class InferenceError(ValueError):
    """Bad input to an inference command: a run without a checkpoint, an empty gallery, an index built by another
    run, a file that is not a saved index. The message names the file or folder; the CLI prints it and exits 2."""
