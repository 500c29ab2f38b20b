"""NN-descent's random-projection-forest start: trees and leaf size against the start's recall and the whole run.

Data as in ``benchmarks/knn_graph.py`` (the overlapping-class set of ``mining_cost.py``: 64-d, classes of ~60,
within-class noise 1.0), k = 64. For every ``--trees`` value (``0``: no forest, the start of sessions 4-19), one
``nn_descent(x, k, n_trees=T, leaf_size=L, max_iters=0)`` (the starting lists only) and one full ``nn_descent``;
recall@k on 1,000 sampled points against exact search. One run per setting, in the order given, after a warm-up.

    python benchmarks/knn_forest.py --size 100000 --trees 0 4 10 20 --leaf 256

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

from knn_graph import recall, sampled_truth  # noqa: E402
from mining_cost import clustered_labelled  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--trees", type=int, nargs="+", default=[0, 4, 10, 20])
    p.add_argument("--leaf", type=int, default=None, help="largest leaf (default: nn_descent's, 5k clipped to 60-256)")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import numba

    from smartmine.index.knn_graph import nn_descent

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    x = clustered_labelled(args.size, 64, 60, 1.0, seed=0)[0]
    warm = clustered_labelled(3_000, 64, 60, 1.0, seed=1)[0]
    for t in sorted(set(args.trees)):  # compilation / numba cache loads
        nn_descent(warm, 8, n_threads=args.threads, n_trees=t, leaf_size=args.leaf, max_iters=2)
    rows, truth = sampled_truth(x, args.k)
    print(f"N = {args.size:,}, 64-d, classes of ~60, spread 1.0, k = {args.k}, {args.threads} threads\n")
    print("| trees | leaf | start s | start recall | total s | recall | iterations | entries inserted per iteration |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for t in args.trees:
        kw = {"n_threads": args.threads, "seed": 0, "n_trees": t, "leaf_size": args.leaf}
        t0 = time.perf_counter()
        start = nn_descent(x, args.k, max_iters=0, **kw)
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = nn_descent(x, args.k, **kw)
        t_full = time.perf_counter() - t0
        hist = ", ".join(f"{h / 1e6:.2f} M" for h in full.stats["history"])
        leaf = args.leaf if args.leaf is not None else "default"
        print(f"| {t} | {leaf if t else '-'} | {t_start:.1f} | {recall(start.idx, rows, truth):.3f} | {t_full:.1f} "
              f"| {recall(full.idx, rows, truth):.3f} | {full.stats['iterations']:.0f} | {hist} |", flush=True)


if __name__ == "__main__":
    main()
