"""What a run keeps besides metrics and checkpoints, for the report: test embeddings and mined-triplet samples.

Layout inside the run folder (all files written atomically):

- ``embeddings/test_labels.npy`` — ``(N,)`` int64 labels of the test split.
- ``embeddings/test_first.npy`` / ``test_last.npy`` — ``(N, D)`` float32 test embeddings at the first and the latest
  evaluation; ``embeddings/epochs.json`` says which epochs those were.
- ``mined/epoch_NNN.json`` — for a fixed set of training anchors, the triplet the miner chose at that epoch:
  ``{"epoch", "strategy", "kappa", "triplets": [{"anchor", "positive", "negative", "d_ap", "d_an"}, ...]}`` with
  training-split row indices (``positive``/``negative`` are ``null`` when the anchor got no mined triplet).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from smartmine.training.checkpoint import atomic_write_bytes

NUM_GALLERY_ANCHORS = 8


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def save_test_embeddings(run_dir: Path, embeddings: torch.Tensor, labels: np.ndarray, epoch: int) -> None:
    """Keep the first evaluation's embeddings and overwrite the latest's (distance histograms, t-SNE)."""
    folder = run_dir / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    emb = embeddings.detach().cpu().numpy().astype(np.float32)
    meta_path = folder / "epochs.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "first" not in meta or not (folder / "test_first.npy").exists():
        _save_npy(folder / "test_first.npy", emb)
        _save_npy(folder / "test_labels.npy", np.asarray(labels, dtype=np.int64))
        meta["first"] = epoch
    _save_npy(folder / "test_last.npy", emb)
    meta["last"] = epoch
    atomic_write_bytes(meta_path, json.dumps(meta).encode())


def record_mined(
    run_dir: Path,
    epoch: int,
    strategy: str,
    triplets: list[tuple[int, int | None, int | None]],
    embeddings: torch.Tensor | np.ndarray | None,
    kappa: float | None = None,
    index_of: dict[int, int] | None = None,
) -> None:
    """Write ``mined/epoch_NNN.json`` for the given ``(anchor, positive, negative)`` training indices.

    ``embeddings`` are the rows the miner saw: the whole training set (``index_of`` = None) or a probe batch whose
    row of training index ``i`` is ``index_of[i]``. Distances are plain Euclidean.
    """
    emb = None if embeddings is None else np.asarray(torch.as_tensor(embeddings).detach().cpu(), dtype=np.float64)

    def dist(i: int, j: int | None) -> float | None:
        if emb is None or j is None:
            return None
        ri, rj = (i, j) if index_of is None else (index_of[i], index_of[j])
        return float(np.linalg.norm(emb[ri] - emb[rj]))

    rows = [
        {"anchor": int(a), "positive": None if p is None else int(p), "negative": None if n is None else int(n),
         "d_ap": dist(a, p), "d_an": dist(a, n)}
        for a, p, n in triplets
    ]
    folder = run_dir / "mined"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"epoch": epoch, "strategy": strategy, "kappa": kappa, "triplets": rows}
    atomic_write_bytes(folder / f"epoch_{epoch:03d}.json", json.dumps(record, indent=1).encode())


def first_triplet_per_anchor(
    anchors: np.ndarray, positives: np.ndarray, negatives: np.ndarray, wanted: list[int]
) -> list[tuple[int, int | None, int | None]]:
    """For each anchor in ``wanted``: its first triplet in ``(anchors, positives, negatives)``.

    Anchors without a triplet give ``(a, None, None)``.
    """
    first: dict[int, tuple[int, int]] = {}
    for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist(), strict=True):
        if a not in first:
            first[a] = (p, n)
    return [(a, *first[a]) if a in first else (a, None, None) for a in wanted]
