"""Warm-started NN-descent at 100k: time and list recall against the sampled candidates per point (``max_candidates``).

A warm start (last epoch's lists as ``init``) flags every entry "new", so its first local join is a full ``S²`` join
per point; this measures whether a smaller ``S`` makes a warm epoch cheaper. Data and drift as ``mining_cost.py``'s
``fanng-warm`` cell (``N`` clustered 64-d points, classes of ~60, within-class spread 1.0; moved by Gaussian noise of
std 0.1), k = 64, recall@64 on 1,000 sampled points against exact search:

    python benchmarks/warm_candidates.py              # N = 100,000 (about 3 minutes on 2 cores)
    python benchmarks/warm_candidates.py 20000

Prints one JSON line per setting: seconds, iterations, entries changed per iteration, recall.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mining_cost import clustered_labelled, sampled_recall  # noqa: E402
from smartmine.index.knn_graph import nn_descent  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    x, _ = clustered_labelled(n, 64, 60, 1.0, seed=0)
    nn_descent(x[:500], 8)  # numba compilation / cache load
    t = time.perf_counter()
    cold = nn_descent(x, 64, seed=0)
    cold_s = time.perf_counter() - t
    print(json.dumps({"cold_s": round(cold_s, 2), "iters": cold.stats["iterations"],
                      "recall": round(sampled_recall(x, cold.idx, 64), 4)}), flush=True)  # fmt: skip
    moved = x + 0.1 * np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    # FanngIndex passes the identity order; nn_descent's own default is the tree's leaf order.
    for s, order in [(64, "identity"), (64, "tree"), (32, "tree"), (24, "tree"), (16, "tree"), (8, "tree")]:
        t = time.perf_counter()
        warm = nn_descent(moved, 64, init=cold.idx, seed=0, max_candidates=s,
                          order=np.arange(n) if order == "identity" else None)  # fmt: skip
        print(json.dumps({"S": s, "order": order, "warm_s": round(time.perf_counter() - t, 2),
                          "iters": warm.stats["iterations"], "changed": warm.stats["history"],
                          "recall": round(sampled_recall(moved, warm.idx, 64), 4)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
