"""FANNG's NN-descent list length against the mining k: build short lists and extend them, or build them at k.

``SmartMiner`` asks every mined epoch for ``neighbours(k)``. With ``knn_k < k`` the index builds ``knn_k`` lists and a
second NN-descent pass extends them to ``k``; with ``knn_k = k`` the construction's lists are the answer. This times
both (build + ``neighbours(k)``, alternating repeats, one process) and measures their recall against ``ExactIndex``
on normalised clustered points shaped like the mining study's training set (4,080 × 64, k = 68)::

    python benchmarks/list_length.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smartmine.index.exact import ExactIndex
from smartmine.index.fanng import FanngIndex


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4080)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=68)
    p.add_argument("--short", type=int, default=32, help="knn_k of the short lists (FanngIndex's default)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(120, args.dim))
    x = (centres[rng.integers(0, 120, args.n)] + 0.9 * rng.normal(size=(args.n, args.dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t0 = time.perf_counter()
    _, truth = ExactIndex().build(x).neighbours(args.k)
    exact_s = time.perf_counter() - t0
    FanngIndex(knn_k=args.short).build(x).neighbours(args.k)  # compile the kernels first
    times: dict[int, list[float]] = {args.short: [], args.k: []}
    recall: dict[int, float] = {}
    for _ in range(args.repeats):
        for knn_k in (args.short, args.k):
            t0 = time.perf_counter()
            _, idx = FanngIndex(knn_k=knn_k, seed=0).build(x).neighbours(args.k)
            times[knn_k].append(time.perf_counter() - t0)
            recall[knn_k] = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(idx, truth, strict=True)]))
    for knn_k, ts in times.items():
        print(f"knn_k {knn_k:>3}: build + neighbours({args.k}) " + " / ".join(f"{t:.2f}" for t in ts)
              + f" s, recall {recall[knn_k]:.3f}")  # fmt: skip
    print(f"exact: {exact_s:.2f} s")


if __name__ == "__main__":
    main()
