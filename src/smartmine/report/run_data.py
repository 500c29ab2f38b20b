"""Read everything a run folder holds for the report, tolerating whatever is missing.

A run folder may be read while training is still going on, after an interruption, or after files were deleted: every
reader here returns ``None`` / empty instead of raising and appends a plain-English sentence to :attr:`RunData.missing`
saying what could not be shown and why. The layout and the file formats are :mod:`smartmine.run_folder`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartmine import run_folder
from smartmine.evaluation.metrics import is_retrieval_metric, metric_sort_key
from smartmine.run_folder import read_metrics_csv

__all__ = ["MinedRecord", "RunData", "is_retrieval_metric", "load_run", "metric_sort_key"]


@dataclass
class MinedRecord:
    """One ``mined/epoch_NNN.json``: the triplet chosen for each fixed anchor at ``epoch``."""

    epoch: int
    strategy: str
    kappa: float | None
    triplets: list[dict[str, Any]]
    """Each ``{"anchor", "positive", "negative", "d_ap", "d_an"}``; positive/negative/distances may be ``None``."""


@dataclass
class RunData:
    """What a run folder holds; any part may be absent (``None`` / empty), with the reason in :attr:`missing`."""

    path: Path
    name: str
    config: Any | None = None
    """The resolved :class:`~smartmine.training.config.RunConfig`, or ``None`` if ``config.yaml`` is absent/invalid."""
    metrics: list[dict[str, float | str]] = field(default_factory=list)
    """Rows of ``metrics.csv`` (one per finished epoch), numbers as floats, empty cells dropped."""
    baseline: dict[str, float] | None = None
    """Raw-pixel test metrics (``baseline.json``), quick start only."""
    untrained: dict[str, float] | None = None
    """Test metrics of the model before its first step (``untrained.json``, ``eval.untrained_baseline``)."""
    test_first: np.ndarray | None = None
    """``(N, D)`` float32 test embeddings at the first evaluation."""
    test_last: np.ndarray | None = None
    """``(N, D)`` float32 test embeddings at the latest evaluation."""
    test_labels: np.ndarray | None = None
    """``(N,)`` int64 labels of the test split."""
    embedding_epochs: dict[str, int] = field(default_factory=dict)
    """``{"first": e, "last": e}``: the epochs the two embedding files come from."""
    mined: list[MinedRecord] = field(default_factory=list)
    """Mined-triplet samples, sorted by epoch."""
    missing: list[str] = field(default_factory=list)
    """Sentences for the report: what is missing and why."""

    # --- derived views ------------------------------------------------------------------------------------------
    @property
    def planned_epochs(self) -> int | None:
        return int(self.config.train.epochs) if self.config is not None else None

    @property
    def last_epoch(self) -> int | None:
        return int(self.metrics[-1]["epoch"]) if self.metrics else None

    @property
    def eval_rows(self) -> list[dict[str, float | str]]:
        """The metrics rows of evaluation epochs (those with at least one retrieval metric)."""
        return [r for r in self.metrics if any(is_retrieval_metric(k) for k in r)]

    @property
    def final_metrics(self) -> dict[str, float]:
        """Retrieval metrics of the latest evaluation (empty if there was none)."""
        rows = self.eval_rows
        if not rows:
            return {}
        return {k: float(v) for k, v in rows[-1].items() if is_retrieval_metric(k) and isinstance(v, float)}

    @property
    def finished(self) -> bool:
        """All planned epochs are logged and the last one was evaluated (the trainer always evaluates the last)."""
        if not self.metrics or self.planned_epochs is None:
            return False
        last = self.metrics[-1]
        return self.last_epoch == self.planned_epochs and any(is_retrieval_metric(k) for k in last)

    def column(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(epochs, values)`` of the rows where ``key`` is a number (both float arrays, possibly empty)."""
        pairs = [(float(r["epoch"]), float(r[key])) for r in self.metrics if isinstance(r.get(key), float)]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        e, v = zip(*pairs, strict=True)
        return np.asarray(e), np.asarray(v)

    def has(self, key: str) -> bool:
        return any(isinstance(r.get(key), float) for r in self.metrics)

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.metrics:
            for k in r:
                seen.setdefault(k, None)
        return list(seen)


def _load_npy(path: Path, missing: list[str], what: str) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        missing.append(f"{what}: {path.name} could not be read ({exc}).")
        return None


def _load_config(run_dir: Path, missing: list[str]) -> Any | None:
    """The resolved config; if it no longer validates (typically: the dataset root moved), read it unchecked."""

    config_module = run_folder.config_schema()
    path = run_folder.RunFolder(run_dir).config
    if not path.exists():
        missing.append(
            "config.yaml is missing: the dataset (for thumbnails), the target error and the planned "
            "number of epochs are unknown."
        )
        return None
    try:
        return config_module.load_config(path)
    except (config_module.ConfigError, OSError) as exc:
        problem = str(exc)
    try:
        # The run validated this config when it started; only the world around it (a moved dataset) changed.
        # The report just reads values, so skip the check that the data root still exists.
        cfg = config_module.load_config(path, check_paths=False)
    except (config_module.ConfigError, OSError, TypeError) as exc:
        missing.append(f"config.yaml could not be read ({exc}).")
        return None
    missing.append(f"config.yaml does not validate any more ({problem}); its values are used as they are.")
    return cfg


def _load_mined(run_dir: Path, missing: list[str]) -> list[MinedRecord]:
    records = []
    for path in run_folder.mined_files(run_dir):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            records.append(
                MinedRecord(
                    epoch=int(raw["epoch"]),
                    strategy=str(raw.get("strategy", "?")),
                    kappa=None if raw.get("kappa") is None else float(raw["kappa"]),
                    triplets=[dict(t) for t in raw.get("triplets", [])],
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            missing.append(f"mined/{path.name} could not be read ({exc}); that epoch is left out of the gallery.")
    return sorted(records, key=lambda r: r.epoch)


def load_run(path: str | Path) -> RunData:
    """Read run folder ``path`` (see the module docstring); raises ``ValueError`` only if it is not a folder."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise ValueError(f"runs: '{run_dir}' is not a run folder (no such directory)")
    missing: list[str] = []
    data = RunData(path=run_dir, name=run_dir.resolve().name or str(run_dir), missing=missing)
    data.config = _load_config(run_dir, missing)
    folder = run_folder.RunFolder(run_dir)
    metrics_path = folder.metrics
    if metrics_path.exists():
        try:
            data.metrics = [r for r in read_metrics_csv(metrics_path) if isinstance(r.get("epoch"), float)]
        except (OSError, ValueError) as exc:
            missing.append(f"metrics.csv could not be read ({exc}).")
    if not data.metrics:
        missing.append("No epoch has finished yet (metrics.csv is missing or empty): there are no curves to draw.")
    elif not data.finished:
        planned = f" of {data.planned_epochs}" if data.planned_epochs is not None else ""
        missing.append(
            f"The run is unfinished or was interrupted: {data.last_epoch}{planned} epoch(s) logged"
            + (
                ""
                if any(is_retrieval_metric(k) for k in data.metrics[-1])
                else ", the last logged epoch has no evaluation"
            )
            + ". Figures show what exists so far."
        )
    for attr, path, read in (("baseline", folder.baseline, run_folder.read_baseline),
                             ("untrained", folder.untrained, run_folder.read_untrained)):  # fmt: skip
        if path.exists():
            try:
                raw = read(run_dir) or {}
                setattr(data, attr, {k: float(v) for k, v in raw.items() if is_retrieval_metric(k)})
            except (OSError, ValueError, TypeError) as exc:
                missing.append(f"{path.name} could not be read ({exc}).")
    emb = run_folder.embedding_files(run_dir)
    data.test_first = _load_npy(emb["test_first"], missing, "First-evaluation embeddings")
    data.test_last = _load_npy(emb["test_last"], missing, "Latest-evaluation embeddings")
    data.test_labels = _load_npy(emb["test_labels"], missing, "Test labels")
    if emb["epochs"].exists():
        try:
            data.embedding_epochs = {k: int(v) for k, v in json.loads(emb["epochs"].read_text()).items()}
        except (OSError, ValueError, TypeError) as exc:
            missing.append(f"embeddings/epochs.json could not be read ({exc}).")
    _check_embeddings(data)
    data.mined = _load_mined(run_dir, missing)
    return data


def _check_embeddings(data: RunData) -> None:
    """Drop embedding files that disagree with the labels, saying so."""
    labels = data.test_labels
    if labels is None:
        if data.test_first is not None or data.test_last is not None:
            data.missing.append("embeddings/test_labels.npy is missing: embedding figures are left out.")
            data.test_first = data.test_last = None
            return
    else:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        data.test_labels = labels
    for attr in ("test_first", "test_last"):
        arr = getattr(data, attr)
        if arr is None or labels is None:
            continue
        if arr.ndim != 2 or arr.shape[0] != labels.shape[0] or not np.isfinite(arr).all():
            data.missing.append(
                f"embeddings/{attr}.npy has shape {arr.shape} or non-finite values, which does not "
                f"match {labels.shape[0]} test labels; it is left out."
            )
            setattr(data, attr, None)
        else:
            setattr(data, attr, np.asarray(arr, dtype=np.float32))
    if data.test_first is None and data.test_last is None:
        data.missing.append(
            "No test embeddings were saved yet (embeddings/ is empty): the embedding map, the "
            "retrieval gallery and the distance histograms need an evaluation."
        )
