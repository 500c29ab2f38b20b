"""The error a run stops with, and the fault-injection hook of the crash-safety tests."""

from __future__ import annotations

import os
import signal


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, bad run folder, incompatible checkpoint, ranks out of step)."""


def fault_point(name: str) -> None:
    """Fault injection for the crash-safety tests: ``SMARTMINE_FAULT=<name>`` SIGKILLs this process at ``name``.

    Names: ``batch:<epoch>:<batch>``, ``mining:<epoch>``, ``after_checkpoint:<epoch>``. Unset in normal use.
    """
    if os.environ.get("SMARTMINE_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
