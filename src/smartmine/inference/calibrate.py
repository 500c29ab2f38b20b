"""Verification threshold: the largest distance at which "same class" still has the precision asked for.

Every unordered pair of test images is a *same* pair (one class) or a *different* pair. Calling a pair a match when
its Euclidean embedding distance is at most ``t`` gives ``precision(t) = same pairs ≤ t / all pairs ≤ t`` and
``recall(t) = same pairs ≤ t / all same pairs``. :func:`pick_threshold` returns the ``t`` with the highest recall
among those whose precision reaches the target (recall only grows with ``t``; precision need not fall
monotonically, so every candidate is checked). Candidates are the same-pair distances; the all-pairs counts are
accumulated over row chunks, so memory is ``O(chunk · N + same pairs)``, never ``N × N``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartmine.inference.errors import InferenceError

CALIBRATION_FILE = "calibration.json"
DEFAULT_MAX_IMAGES = 10_000
"""Images used at most (a seeded random subset beyond that): 50M pairs, a few seconds of matrix products."""


@dataclass
class Calibration:
    """A calibrated threshold. ``threshold`` is a plain (not squared) Euclidean distance between embeddings."""

    threshold: float
    target_precision: float
    precision: float
    recall: float
    same_pairs: int
    different_pairs: int
    images: int
    split: str = "test"
    checkpoint: str = ""
    checkpoint_sha256: str = ""


def _pair_distances(x: np.ndarray, rows: slice) -> np.ndarray:
    """Euclidean distances ``(len(rows), N)`` of the rows ``rows`` of ``x`` to all rows, float64."""
    sq = np.einsum("ij,ij->i", x, x)
    block = sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T)
    return np.sqrt(np.maximum(block, 0.0))


def _upper_pairs(x: np.ndarray, labels: np.ndarray, chunk: int):
    """Yield ``(distances, same)`` of every unordered pair ``i < j``, one row chunk at a time."""
    n = x.shape[0]
    cols = np.arange(n)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = _pair_distances(x, slice(s, e))
        upper = cols[None, :] > np.arange(s, e)[:, None]
        yield d[upper], (labels[s:e, None] == labels[None, :])[upper]


def pick_threshold(embeddings: Any, labels: Any, target_precision: float = 0.9, *,
                   chunk: int = 1024) -> dict[str, float | int]:
    """Threshold with the highest recall at precision ≥ ``target_precision`` over all pairs of ``embeddings``.

    Args:
        embeddings: ``(N, D)`` finite floats (NumPy or torch), N ≥ 2.
        labels: ``(N,)`` class labels (any comparable values).
        target_precision: in ``(0, 1]``; default 0.9.
        chunk: rows per distance block (memory ``chunk × N`` float64).

    Returns:
        ``threshold``, ``precision``, ``recall``, ``same_pairs``, ``different_pairs``.

    Raises:
        InferenceError: no same-class pair, or no threshold reaches the target (the message gives the best
        precision reachable).
    """
    x = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] < 2 or y.shape != (x.shape[0],):
        raise InferenceError(f"embeddings/labels: expected (N, D) and (N,) with N >= 2, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise InferenceError("embeddings: non-finite values")
    if not 0.0 < target_precision <= 1.0:
        raise InferenceError(f"target precision: expected a value in (0, 1], got {target_precision}")
    same_d = np.sort(np.concatenate([d[s] for d, s in _upper_pairs(x, y, chunk)]))
    if same_d.size == 0:
        raise InferenceError("labels: no two images share a class, so there are no same pairs to calibrate on")
    thresholds = np.unique(same_d)
    tp = np.searchsorted(same_d, thresholds, side="right")  # same pairs with d <= t
    fp = np.zeros(thresholds.size + 1, dtype=np.int64)
    for d, s in _upper_pairs(x, y, chunk):  # the same blocks again: identical values, so ≤ is consistent
        fp += np.bincount(np.searchsorted(thresholds, d[~s], side="left"), minlength=thresholds.size + 1)
    fp = np.cumsum(fp)[: thresholds.size]  # different pairs with d <= t
    precision = tp / (tp + fp)
    n_pairs = x.shape[0] * (x.shape[0] - 1) // 2
    ok = np.flatnonzero(precision >= target_precision - 1e-12)
    if ok.size == 0:
        best = int(np.argmax(precision))
        raise InferenceError(
            f"no distance threshold reaches precision {target_precision:g} on the {n_pairs} test pairs (the best "
            f"is {precision[best]:.3f} at recall {tp[best] / same_d.size:.3f}); ask for a lower precision"
        )
    j = int(ok[-1])
    return {"threshold": float(thresholds[j]), "precision": float(precision[j]), "recall": float(tp[j] / same_d.size),
            "same_pairs": int(same_d.size), "different_pairs": int(n_pairs - same_d.size)}


def calibrate(model: Any, target_precision: float = 0.9, *, split: str = "test", max_images: int = DEFAULT_MAX_IMAGES,
              batch_size: int = 256, progress: bool | None = None) -> Calibration:
    """Calibrate ``model`` (a :class:`~smartmine.inference.model.TrainedModel`) on a split of its run's dataset.

    Beyond ``max_images`` images a seeded (the run's seed) random subset is used.
    """
    emb, dataset = model.embed_split(split, batch_size=batch_size, progress=progress)
    labels = np.asarray(dataset.labels)
    if len(labels) > max_images:
        keep = np.sort(np.random.default_rng(model.config.seed).choice(len(labels), max_images, replace=False))
        emb, labels = emb[keep], labels[keep]
    r = pick_threshold(emb, labels, target_precision)
    return Calibration(target_precision=float(target_precision), images=int(len(labels)), split=split,
                       checkpoint=str(model.checkpoint_path), checkpoint_sha256=model.checkpoint_sha256, **r)


def save_calibration(run_dir: str | os.PathLike, cal: Calibration) -> Path:
    """Write ``RUN/calibration.json`` atomically; returns its path."""
    from smartmine.training.checkpoint import atomic_write_text

    path = Path(run_dir) / CALIBRATION_FILE
    atomic_write_text(path, json.dumps(asdict(cal), indent=2) + "\n")
    return path


def load_calibration(model: Any) -> Calibration | None:
    """The run's calibration if it was made with ``model``'s checkpoint (same SHA-256), else ``None``."""
    path = Path(model.run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        cal = Calibration(**raw)
    except (ValueError, TypeError) as exc:
        raise InferenceError(f"{path}: not a calibration file written by smartmine calibrate ({exc})") from exc
    return cal if cal.checkpoint_sha256 == model.checkpoint_sha256 else None
