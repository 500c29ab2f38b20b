"""Input validation shared by losses, miners, indexes and metrics.

Every public entry point validates its inputs here, so that bad input fails early with a ``ValueError`` that names
the argument and the problem instead of surfacing later as a silent NaN loss or a crash inside a compiled kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(anchors, positives, negatives)``: three 1-D ``torch.long`` tensors of equal length, row indices."""

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(x: ArrayLike | Sequence, name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Return ``x`` as a torch tensor (NumPy arrays are wrapped without a copy where possible)."""
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t if device is None else t.to(device)
    try:
        return torch.as_tensor(x, device=device)
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument's name
        raise ValueError(f"{name}: cannot be converted to a tensor ({exc})") from exc


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def as_numpy(x, dtype=None) -> np.ndarray:
    """``x`` (a tensor on any device, an array or a nested sequence) as a NumPy array of ``dtype`` (default: kept);
    no copy where ``x`` already is a CPU tensor or array of that dtype."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=dtype)


def _nonfinite_rows(t: torch.Tensor) -> np.ndarray:
    """Indices of the rows of a 2-D tensor that hold NaN or inf (empty when all are finite). NumPy does the work for
    CPU tensors: torch's parallel kernels would wake its OpenMP pool, whose threads keep spinning after the check and
    slow down the compiled (numba) kernels that usually come next (15 % on a 2-core machine for a 2,000-query FANNG
    search)."""
    if t.device.type == "cpu" and t.dtype in _NUMPY_FLOATS:
        finite = np.isfinite(t.numpy())
        if finite.all():
            return np.zeros(0, np.int64)
        return np.flatnonzero(~finite.all(axis=1))
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return np.zeros(0, np.int64)
    return (~finite).any(dim=1).nonzero().flatten().cpu().numpy()


def check_embeddings(
    embeddings: ArrayLike,
    name: str = "embeddings",
    *,
    min_rows: int = 0,
    allow_nonfinite: bool = False,
) -> torch.Tensor:
    """Validate a 2-D floating-point matrix of shape ``(N, D)`` and return it as a tensor.

    Raises ``ValueError`` when the input is not 2-D, not floating point, has fewer than ``min_rows`` rows, has zero
    columns, or contains NaN/inf values (unless ``allow_nonfinite``); the message names the first offending row.
    """
    t = as_tensor(embeddings, name)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (N, D), got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        raise ValueError(f"{name}: expected a floating-point dtype, got {t.dtype}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} rows, got {t.shape[0]}")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {tuple(t.shape)}")
    if not allow_nonfinite and t.numel() > 0:
        bad_rows = _nonfinite_rows(t.detach())
        if bad_rows.size:
            raise ValueError(
                f"{name}: contains NaN or inf values in {bad_rows.size} row(s), first at row {int(bad_rows[0])}"
            )
    return t


def check_labels(labels: ArrayLike | Sequence[int], n: int | None = None, name: str = "labels") -> torch.Tensor:
    """Validate 1-D integer class labels (optionally of length ``n``) and return them as a ``torch.long`` tensor.

    Floating-point labels are rejected rather than silently truncated; booleans are rejected too.
    """
    t = as_tensor(labels, name)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D array of integer class labels, got shape {tuple(t.shape)}")
    if torch.is_floating_point(t) or torch.is_complex(t) or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer dtype, got {t.dtype}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name}: length {t.shape[0]} does not match the {n} embeddings")
    return t.long()


def check_triplets(triplets: Sequence[ArrayLike], n: int, name: str = "triplets") -> Triplets:
    """Validate ``(a, p, n)`` index tensors of equal length with every index in ``[0, n)``."""
    if not isinstance(triplets, list | tuple) or len(triplets) != 3:
        raise ValueError(f"{name}: expected a tuple (anchors, positives, negatives) of index tensors")
    out = []
    for part, label in zip(triplets, ("anchors", "positives", "negatives"), strict=True):
        t = as_tensor(part, f"{name}.{label}")
        if t.dim() != 1:
            raise ValueError(f"{name}.{label}: expected a 1-D index tensor, got shape {tuple(t.shape)}")
        if torch.is_floating_point(t) or t.dtype == torch.bool:
            raise ValueError(f"{name}.{label}: expected an integer dtype, got {t.dtype}")
        t = t.long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            lo, hi = int(t.min()), int(t.max())
            raise ValueError(f"{name}.{label}: indices must lie in [0, {n}), got range [{lo}, {hi}]")
        out.append(t)
    if not (out[0].shape == out[1].shape == out[2].shape):
        raise ValueError(
            f"{name}: anchors, positives and negatives differ in length "
            f"({out[0].numel()}, {out[1].numel()}, {out[2].numel()})"
        )
    return out[0], out[1], out[2]


def check_positive_int(value: int, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer ``>= minimum``, else raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def empty_triplets(device: torch.device | str | None = None) -> Triplets:
    """Three empty ``torch.long`` tensors: what a miner returns when the batch admits no triplet."""
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()
