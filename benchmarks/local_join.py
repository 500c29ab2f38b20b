"""One thread's local join per point: the table path of ``join_range`` against the scan per pair, on the same state.

Data: the overlapping-class set of ``benchmarks/mining_cost.py`` (N 64-d points, classes of ~60), in the tree order
``nn_descent`` processes. State: the lists after the forest start (every entry new), i.e. the first iteration of a
cold build; candidates sampled as ``nn_descent`` samples them, ``S`` per point. Times ``join_range`` over
``--points`` consecutive points from ``--start``, with the table path (``MATRIX_MIN_NEW``) and with the scan per
pair forced, alternated ``--repeats`` times (the first round includes compilation). Both write the same updates, so
the counts printed must agree. This is the probe behind docs/BENCHMARKS.md, session 23:

    python benchmarks/local_join.py --size 1000000 --candidates 128 256
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from mining_cost import clustered_labelled  # noqa: E402


def main() -> None:
    from smartmine.index import _knn_kernels as KK
    from smartmine.index.knn_graph import nn_descent, sample_candidates, spatial_order

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--candidates", type=int, nargs="+", default=[128, 256], help="S values")
    p.add_argument("--start", type=int, default=200_000, help="first point timed (in tree order)")
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    n, k = args.size, args.k
    lo, hi = min(args.start, n - 1), min(args.start + args.points, n)
    x, _ = clustered_labelled(n, 64, 60, 1.0, seed=0)
    xs = np.ascontiguousarray(x[spatial_order(x, 0)])
    t = time.perf_counter()
    start = nn_descent(xs, k, order=np.arange(n), max_iters=0, n_threads=2)
    print(f"{n:,} points, k = {k}, forest start {time.perf_counter() - t:.1f} s, points {lo}-{hi - 1}", flush=True)
    nn_i, nn_d = start.idx.astype(np.int32), start.sq_dist.copy()
    nn_new = (nn_i >= 0).astype(np.uint8)
    chunk = 256
    for s in args.candidates:
        new = (np.empty((n, s), np.int32), np.empty((n, s), np.uint32), np.empty(n, np.int32))
        old = (np.empty((n, s), np.int32), np.empty((n, s), np.uint32), np.empty(n, np.int32))
        sample_candidates(nn_i, nn_new.copy(), 0, new, old, 2)
        cap = KK.update_capacity(chunk, s)
        out = (np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, np.float32))
        scratch = tuple(a[0] for a in KK.join_scratch(1, n, s, xs.shape[1]))
        for _ in range(args.repeats):
            for name, min_new in (("table", KK.MATRIX_MIN_NEW), ("pairs", 10**9)):
                t = time.perf_counter()
                m = 0
                for b in range(lo, hi, chunk):
                    m += KK.join_range(xs, nn_i, nn_d, new[0], new[2], old[0], old[2], b, min(hi, b + chunk), *out,
                                       *scratch, min_new)  # fmt: skip
                us = (time.perf_counter() - t) / (hi - lo) * 1e6
                print(f"S {s}, new {new[2][lo:hi].mean():.1f} / old {old[2][lo:hi].mean():.1f} candidates per point, "
                      f"{name}: {us:.1f} us per point, {m / (hi - lo):.0f} updates per point", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
