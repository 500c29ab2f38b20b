"""Seconds of Algorithm 1 selection (``select_triplets``) against the number of anchors and threads.

The neighbour lists are synthetic but shaped like real ones: ``k`` neighbours per anchor, ascending squared distances,
classes of about 100 points, and a few same-class entries planted at fixed ranks (0, 3, 7, 20) so that every anchor has
a nearest positive, valid negatives and candidate positives. Each cell is the median of ``--repeats`` calls after a
warm-up call (which loads the compiled kernels from numba's cache); the entry checks are part of the timing, as in
real use.

    python benchmarks/selection_speed.py                         # 100k x 64 and 1M x 100, 1 and 2 threads
    python benchmarks/selection_speed.py --sizes 10000 --k 64    # a quick run

Prints a Markdown table: anchors, k, threads, seconds, anchors per second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def neighbour_lists(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices (n, k) int64, sq_distances (n, k) float32, labels (n,))`` as described in the module docstring."""
    rng = np.random.default_rng(seed)
    n_classes = max(2, n // 100)
    labels = rng.integers(0, n_classes, n)
    idx = rng.integers(0, n, (n, k)).astype(np.int64)
    d2 = np.sort(rng.random((n, k), dtype=np.float32), axis=1)
    members = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[members], np.arange(n_classes))
    counts = np.bincount(labels, minlength=n_classes)
    for rank in (0, 3, 7, 20):
        if rank < k:
            offset = rng.integers(0, 1 << 30, n) % counts[labels]
            idx[:, rank] = members[starts[labels] + offset]
    return idx, d2, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--k", type=int, nargs="+", default=[64, 100], help="one per size, or one for all")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from smartmine.smart.selection import select_triplets

    ks = args.k if len(args.k) == len(args.sizes) else [args.k[0]] * len(args.sizes)
    print("| anchors | k | threads | seconds | anchors/s |")
    print("|---:|---:|---:|---:|---:|")
    for n, k in zip(args.sizes, ks, strict=True):
        idx, d2, labels = neighbour_lists(n, k)
        select_triplets(*neighbour_lists(1000, k), 1.0, np.random.default_rng(0))  # warm-up
        for threads in args.threads:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                select_triplets(idx, d2, labels, 1.0, np.random.default_rng(0), n_threads=threads)
                times.append(time.perf_counter() - t)
            sec = float(np.median(times))
            print(f"| {n:,} | {k} | {threads} | {sec:.3f} | {n / sec:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
