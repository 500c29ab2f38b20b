"""How much of the next epoch's k-NN lists can last epoch's lists give? The ceiling of a warm start (issue 13).

A warm start can only find the new neighbours that last epoch's graph leads to. This measures, at ``--size`` points
of the overlapping-class data of ``benchmarks/mining_cost.py`` (classes of ~60, spread 1.0), after the embeddings move
by Gaussian noise of ``--drift`` per coordinate:

- the recall@k of the stale lists (what the drift check of ``FanngIndex`` estimates);
- the recall@k of an **exhaustive two-hop re-rank**: for each sampled point, every point within two hops of it in the
  stale lists (forward, or forward and reverse), re-ranked exactly under the moved points. One NN-descent join samples
  a subset of these pairs, so no single join from the stale lists can do better;
- NN-descent warm starts from the stale lists capped at 1, 2, ... iterations (``max_iters``), with ``S`` candidates
  per point, and a cold build of the moved points: seconds and recall@k.

Points are in random-projection tree order, as ``FanngIndex`` holds them (no renumbering inside ``nn_descent``).
Example (session 25):

    python benchmarks/warm_ceiling.py --size 100000 --drift 0.1 0.3

Prints a Markdown table per drift.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

from knn_graph import recall, sampled_truth  # noqa: E402
from mining_cost import clustered_labelled  # noqa: E402


def reverse_lists(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, sources)`` of the reverse edges of the lists ``idx`` ``(N, k)`` (``-1`` entries skipped)."""
    n = idx.shape[0]
    src = np.repeat(np.arange(n), idx.shape[1])
    dst = idx.ravel()
    keep = dst >= 0
    src, dst = src[keep], dst[keep]
    order = np.argsort(dst, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return indptr, src[order]


def two_hop(
    x: np.ndarray, idx: np.ndarray, rows: np.ndarray, k: int, rev: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, float]:
    """For each of ``rows``: its ``k`` nearest (under ``x``) among every point within two hops of it in ``idx``
    (through the reverse edges ``rev`` too when given). Returns ``(len(rows), k)`` ids and the mean number of
    distinct candidates per row."""
    out = np.empty((rows.size, k), dtype=np.int64)
    sizes = []
    for o, r in enumerate(rows):
        first = idx[r][idx[r] >= 0]
        if rev is not None:
            first = np.concatenate([first, rev[1][rev[0][r] : rev[0][r + 1]]])
            second = [idx[first].ravel()] + [rev[1][rev[0][q] : rev[0][q + 1]] for q in first]
        else:
            second = [idx[first].ravel()]
        cand = np.unique(np.concatenate([first, *second]))
        cand = cand[(cand >= 0) & (cand != r)]
        sizes.append(cand.size)
        d = ((x[cand] - x[r]) ** 2).sum(axis=1)
        out[o] = cand[np.argsort(d, kind="stable")[:k]]
    return out, float(np.mean(sizes))


def bench_drift(x: np.ndarray, prev: np.ndarray, drift: float, args: argparse.Namespace) -> None:
    from smartmine.index.knn_graph import nn_descent

    n, k = x.shape[0], args.k
    ident = np.arange(n)
    moved = np.ascontiguousarray(x + drift * np.random.default_rng(2).normal(size=x.shape).astype(np.float32))
    rows, truth = sampled_truth(moved, k, args.sample)
    print(f"\n### drift {drift}: {n:,} × {x.shape[1]}, k = {k}, {args.threads} threads, {rows.size} sampled points\n")
    print("| what | seconds | recall@k | notes |")
    print("|---|---:|---:|---|")
    print(f"| stale lists (no work) | | {recall(prev, rows, truth):.3f} | |")
    own = np.arange(rows.size)  # the re-ranked lists below have one row per sampled point
    fwd, c_fwd = two_hop(moved, prev, rows, k, None)
    print(f"| exhaustive two-hop re-rank, forward | | {recall(fwd, own, truth):.3f} | "
          f"{c_fwd:.0f} candidates per point |")  # fmt: skip
    both, c_both = two_hop(moved, prev, rows, k, reverse_lists(prev))
    print(f"| exhaustive two-hop re-rank, forward + reverse | | {recall(both, own, truth):.3f} | "
          f"{c_both:.0f} candidates per point |")  # fmt: skip
    runs = [(f"warm, S = {s}, max_iters = {it}", dict(init=prev, max_candidates=s, max_iters=it))
            for s in args.candidates for it in args.iters]  # fmt: skip
    runs.append(("cold build of the moved points", {}))
    for _ in range(args.repeats):
        for name, kw in runs:
            t0 = time.perf_counter()
            res = nn_descent(moved, k, seed=0, n_threads=args.threads, order=ident, **kw)
            sec = time.perf_counter() - t0
            per_it = " / ".join(f"{v:.2f}" for v in res.stats["seconds_per_iteration"])
            print(f"| {name} | {sec:.2f} | {recall(res.idx, rows, truth):.3f} | "
                  f"{len(res.stats['history'])} iterations: {per_it} s |", flush=True)  # fmt: skip


def main() -> None:
    from smartmine.index.knn_graph import nn_descent, spatial_order

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--drift", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--candidates", type=int, nargs="+", default=[64, 128], help="max_candidates S of the warm starts")
    p.add_argument("--iters", type=int, nargs="+", default=[1, 2, 10], help="max_iters of the warm starts")
    p.add_argument("--sample", type=int, default=1_000, help="points whose exact lists measure recall")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    x, _ = clustered_labelled(args.size, args.dim, 60, 1.0, seed=0)
    x = np.ascontiguousarray(x[spatial_order(x, 0)])
    nn_descent(x[:2000], args.k, seed=0, n_threads=args.threads)  # compile / load the numba cache
    t0 = time.perf_counter()
    prev = nn_descent(x, args.k, seed=0, n_threads=args.threads, order=np.arange(args.size)).idx
    print(f"cold build of last epoch's lists: {time.perf_counter() - t0:.2f} s")
    for drift in args.drift:
        bench_drift(x, prev, drift, args)


if __name__ == "__main__":
    main()
