"""Real embeddings for the ANN benchmark: cub100 images through EfficientNet-Lite0's ImageNet features, reduced to D.

Every image of ``--data-root`` (train and test splits, 5,902 for cub100) is resized and centre-cropped as at test
time, embedded by the pretrained backbone (1280-d, the offline weights), projected on its top ``--dim`` principal
components (fitted on these features) and L2-normalised, as a metric-learning embedding would be. Saved as float32
``(N, dim)`` to ``--out`` with the labels next to it (``<out>.labels.npy``).

    python benchmarks/cub100_embeddings.py --out .devdata/cub100_lite0_pca64.npy
    python benchmarks/ann.py --embeddings .devdata/cub100_lite0_pca64.npy --skip-synthetic
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module peers


def backbone_features(data_root: str, image_size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 1280)`` float32 backbone features and ``(N,)`` labels of the train then test split."""
    from peers import BackboneFeatures
    from smartmine.training import builders
    from smartmine.training.config import config_from_dict
    from smartmine.training.embedding import embed_dataset

    cfg = config_from_dict(
        {
            "data": {"name": "cub100", "root": data_root, "image_size": image_size, "augment": False},
            "model": {"backbone": "efficientnet_lite0", "pretrained": True},
        }
    )
    data = builders.build_datasets(cfg)
    model = builders.build_model(cfg, data.in_channels)
    features = BackboneFeatures(model)
    feats, labels = [], []
    for split in (data.train_eval, data.test):
        feats.append(embed_dataset(features, split, device=torch.device("cpu"), batch_size=batch_size, progress=True))
        labels.append(np.asarray(split.labels, dtype=np.int64))
    return torch.cat(feats).numpy(), np.concatenate(labels)


def pca_normalised(x: np.ndarray, dim: int) -> np.ndarray:
    """Rows of ``x`` centred, projected on the top ``dim`` principal components, and L2-normalised (float32)."""
    xc = x.astype(np.float64) - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    y = xc @ vt[:dim].T
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "cub100"))
    p.add_argument("--out", default=str(REPO / ".devdata" / "cub100_lite0_pca64.npy"))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    t0 = time.perf_counter()
    feats, labels = backbone_features(args.data_root, args.image_size, args.batch_size)
    emb = pca_normalised(feats, args.dim)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    np.save(out.with_suffix(".labels.npy"), labels)
    print(f"{emb.shape[0]} × {emb.shape[1]} embeddings → {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
