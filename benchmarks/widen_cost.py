"""Cost of the widened lists (issue 15): ``widen_lists`` and the semihard thresholds / selection on the longer lists.

Synthetic lists (random ids, ascending random distances) of ``k`` entries per point, 64-d Gaussian embeddings, uniform
labels; each stage timed ``--repeats`` times after one warm-up call (numba compilation), median reported. There is no
peer: neither pytorch-metric-learning nor open-metric-learning mines from dataset-wide lists. Command and results:
docs/BENCHMARKS.md, "Session 10: widened lists".
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from smartmine.smart.list_extras import widen_lists
from smartmine.smart.selection import select_triplets
from smartmine.smart.thresholds import kappa_thresholds


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _row(n: int, classes: int, k: int, extras: int, repeats: int, rng: np.random.Generator) -> str:
    """One table row: the medians at ``n`` points."""
    x = rng.normal(size=(n, 64)).astype(np.float32)
    lab = rng.integers(0, classes, n)
    idx = rng.integers(0, n, (n, k))
    d2 = np.sort(rng.random((n, k)) * 2, axis=1)
    wi, wd = widen_lists(x, idx, d2, lab, np.random.default_rng(1), extras, extras)
    t_widen = _median_seconds(lambda: widen_lists(x, idx, d2, lab, np.random.default_rng(1), extras, extras), repeats)
    t_thr = _median_seconds(lambda: kappa_thresholds(idx, d2, lab, "semihard"), repeats)
    t_thr_w = _median_seconds(lambda: kappa_thresholds(wi, wd, lab, "semihard"), repeats)
    t_sel = _median_seconds(
        lambda: select_triplets(wi, wd, lab, 1.0, np.random.default_rng(0), selection="semihard"), repeats
    )
    return f"| {n:,} | {k} | {t_widen:.2f} | {t_thr:.2f} / {t_thr_w:.2f} | {t_sel:.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2949, 100_000])
    ap.add_argument("--classes", type=int, nargs="+", default=[50, 1000])
    ap.add_argument("--k", type=int, default=120)
    ap.add_argument("--extras", type=int, default=64, help="extra positives and extra negatives each")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| N | k | widen_lists s | thresholds s (lists / widened) | selection s (widened) |")
    print("|---:|---:|---:|---:|---:|")
    for n, c in zip(args.sizes, args.classes, strict=True):
        print(_row(n, c, args.k, args.extras, args.repeats, rng))


if __name__ == "__main__":
    main()
