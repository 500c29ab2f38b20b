"""Recall@10 against queries per second: FanngIndex, hnswlib, faiss HNSW and exact search.

Data: Gaussian clusters (default 100,000 × 64, 100 clusters; queries drawn from the same clusters) and, optionally,
real embeddings from a ``.npy`` file (``--embeddings``; a random ``--queries`` of its rows become the queries and the
rest is indexed). Ground truth is exact search (``smartmine.index.exact.exact_knn`` when available, else a NumPy
brute force). Every method runs with the same thread count, all queries in one batch call, after a warm-up call;
timing is round-robin (each of ``--repeats`` rounds times every method and setting once, repeating the batch call
until ``--min-time`` seconds have passed, so that a 500-query call of a millisecond is not timed alone) and the
median round counts.
FANNG runs twice per graph: with fixed budgets (the paper's search) and with early termination (``search_ef``,
beyond the paper) under a budget cap of ``--ef-budget-cap``.

    python benchmarks/ann.py --quick                 # 20,000 points, a few settings: a smoke run
    python benchmarks/ann.py                         # 100,000 × 64
    python benchmarks/ann.py --embeddings emb.npy    # also on real embeddings

Prints one Markdown table per dataset (method, setting, build seconds, recall@10, queries/s) and, per method, the
queries/s interpolated at recall@10 = 0.9.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

# OpenMP threads (faiss's, torch's) spin-wait after each parallel call by default; with round-robin timing they would
# steal the cores from whichever method runs next (measured: FANNG at 20k ran 1.8x slower right after a faiss
# search). Passive waiting makes the methods independent of their order. Must be set before faiss/torch load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

K = 10


def clustered(n: int, d: int, n_clusters: int, spread: float, seed: int) -> np.ndarray:
    """``n`` float32 points around ``n_clusters`` standard-normal centres with isotropic noise ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32)


def ground_truth(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Exact k-NN indices and the queries/s of computing them."""
    try:
        from smartmine.index.exact import exact_knn
    except ImportError:
        exact_knn = None
    t = time.perf_counter()
    if exact_knn is not None:
        idx = exact_knn(q, x, k)[1].numpy()
    else:
        idx = np.empty((q.shape[0], k), dtype=np.int64)
        xn = (x.astype(np.float64) ** 2).sum(1)
        for s in range(0, q.shape[0], 256):
            qq = q[s : s + 256].astype(np.float64)
            d = xn[None, :] - 2 * qq @ x.T.astype(np.float64)
            part = np.argpartition(d, k, axis=1)[:, :k]
            order = np.argsort(np.take_along_axis(d, part, 1), axis=1)
            idx[s : s + 256] = np.take_along_axis(part, order, 1)
    return idx, q.shape[0] / (time.perf_counter() - t)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum()
    return float(hits) / truth.size


REPEATS = 5
MIN_TIME = 0.2  # seconds per timed sample: short calls are repeated until then (timer and scheduler jitter)

# A case: (method, setting, build seconds, search function returning (Q, K) indices, setting suffix function or None).
Case = tuple[str, str, float, Callable[[], np.ndarray], Callable[[], str] | None]


def run_cases(cases: list[Case], truth: np.ndarray, n_queries: int) -> list[tuple[str, str, float, float, float]]:
    """Recall and queries/s of every case. Timing is round-robin: each of ``REPEATS`` rounds times every case once
    (its call repeated until ``MIN_TIME`` has passed), and the median round counts, so a slow spell of a shared
    machine hits all methods alike."""
    rows: list[tuple[str, str, float, float]] = []
    for method, setting, build, fn, suffix in cases:
        found = fn()  # warm-up, and the result whose recall is reported
        if suffix is not None:
            setting += suffix()
        rows.append((method, setting, build, recall_at(found, truth)))
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(REPEATS):
        for c, case in enumerate(cases):
            t = time.perf_counter()
            calls = 0
            while True:
                case[3]()
                calls += 1
                elapsed = time.perf_counter() - t
                if elapsed >= MIN_TIME:
                    break
            times[c].append(elapsed / calls)
    return [(*row, n_queries / float(np.median(ts))) for row, ts in zip(rows, times, strict=True)]


def _number(text: str) -> int | float:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5 (constructor options of ``--fanng-construction``)."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def fanng_cases(x, q, budgets, threads, efs=(), ef_cap=4096, construction="nn_descent") -> list[Case]:
    from smartmine.index.fanng import FanngIndex

    construction, *opts = construction.split(",")
    options = {k: _number(v) for k, v in (o.split("=", 1) for o in opts)}
    t = time.perf_counter()
    index = FanngIndex(n_threads=threads, seed=0, construction=construction, **options).build(x)
    index.csr()  # construction="nn_descent" builds its graph on first use: inside the timed build
    build = time.perf_counter() - t
    s = index.stats_
    label = ",".join([construction, *opts])
    name = "FanngIndex" if label == "nn_descent" else f"FanngIndex ({label})"
    print(
        f"  {name}: k-NN {s['seconds_knn']:.1f}s ({int(s['knn_iterations'])} it), "
        f"insertion {s.get('seconds_insert', 0.0):.1f}s, {int(s['n_pairs'])} pairs, "
        f"success {s['success_rate']:.3f}, mean degree {s['mean_degree']:.1f}, TA {s['seconds_traverse_add']:.1f}s "
        f"refine {s['seconds_refine']:.1f}s repair {s['seconds_repair']:.1f}s ({int(s['n_repaired'])} repairs)"
    )
    cases: list[Case] = []
    for b in budgets:
        cases.append((name, f"budget={b}", build, lambda b=b: index.search(q, K, budget=b)[1], None))
    for ef in efs:
        spent: list[float] = []

        def run(ef=ef, spent=spent):
            found = index.search(q, K, budget=ef_cap, ef=ef)[1]
            spent.append(float(index.last_distance_computations_.mean()))
            return found

        cases.append((f"{name} + early stop", f"ef={ef}", build, run, lambda s=spent: f" ({s[0]:.0f} dist/query)"))
    return cases


def hnswlib_cases(x, q, efs, threads) -> list[Case]:
    try:
        import hnswlib
    except ImportError:
        print("  hnswlib not installed: skipped")
        return []
    t = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=x.shape[1])
    index.init_index(max_elements=x.shape[0], M=16, ef_construction=200, random_seed=0)
    index.set_num_threads(threads)
    index.add_items(x, np.arange(x.shape[0]))
    build = time.perf_counter() - t

    def run(ef: int) -> np.ndarray:
        index.set_ef(max(ef, K))
        return index.knn_query(q, k=K)[0].astype(np.int64)

    return [("hnswlib (M=16)", f"ef={ef}", build, lambda ef=ef: run(ef), None) for ef in efs]


def faiss_cases(x, q, efs, threads) -> list[Case]:
    from smartmine.index.faiss_index import FaissIndex

    try:
        t = time.perf_counter()
        index = FaissIndex(kind="hnsw", hnsw_m=32, ef_construction=80, n_threads=threads).build(x)
    except ImportError:
        print("  faiss not installed: skipped")
        return []
    build = time.perf_counter() - t

    import faiss

    def run(ef: int, spent: list[float]) -> np.ndarray:
        index.ef_search = ef
        faiss.cvar.hnsw_stats.reset()
        found = index.search(q, K)[1]
        spent.append(faiss.cvar.hnsw_stats.ndis / len(q))  # distance computations, all layers
        return found

    cases: list[Case] = []
    for ef in efs:
        spent: list[float] = []
        suffix = lambda s=spent: f" ({s[0]:.0f} dist/query)"  # noqa: E731
        cases.append(("faiss HNSW (M=32)", f"efSearch={ef}", build, lambda ef=ef, s=spent: run(ef, s), suffix))
    return cases


def qps_at_recall(points: list[tuple[float, float]], target: float) -> float | None:
    """Queries/s at ``target`` recall, interpolated (log qps, linear recall) between the bracketing settings."""
    pts = sorted(points)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:], strict=False):
        if r0 <= target <= r1:
            if r1 == r0:
                return max(q0, q1)
            w = (target - r0) / (r1 - r0)
            return float(np.exp((1 - w) * np.log(q0) + w * np.log(q1)))
    if pts and pts[0][0] >= target:
        return max(qps for r, qps in pts if r >= target)
    return None


def bench(name: str, x: np.ndarray, q: np.ndarray, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    print(f"\n### {name}: {x.shape[0]:,} points × {x.shape[1]} dims, {q.shape[0]:,} queries, {args.threads} threads\n")
    truth, exact_qps = ground_truth(q, x, K)
    cases = []
    for construction in args.fanng_construction:
        cases += fanng_cases(x, q, args.budgets, args.threads, args.fanng_efs, args.ef_budget_cap, construction)
    cases += hnswlib_cases(x, q, args.efs, args.threads)
    cases += faiss_cases(x, q, args.efs, args.threads)
    rows = [("exact (torch matmul)", "-", 0.0, 1.0, exact_qps)] + run_cases(cases, truth, len(q))
    print("\n| method | setting | build s | recall@10 | queries/s |")
    print("|---|---|---:|---:|---:|")
    for m, setting, build, rec, qps in rows:
        print(f"| {m} | {setting} | {build:.1f} | {rec:.3f} | {qps:,.0f} |")
    print("\nqueries/s at recall@10 = 0.9 (interpolated):")
    for m in dict.fromkeys(r[0] for r in rows[1:]):
        at = qps_at_recall([(r[3], r[4]) for r in rows if r[0] == m], 0.9)
        print(f"- {m}: " + ("not reached" if at is None else f"{at:,.0f}"))


def main() -> None:
    global REPEATS, MIN_TIME
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20,000 points and fewer settings (smoke run)")
    p.add_argument("--n", type=int, default=100_000, help="points of the clustered set")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--spread", type=float, default=0.35, help="cluster noise (centres are standard normal)")
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--efs", type=int, nargs="+", default=[10, 20, 40, 80, 160, 320], help="hnswlib / faiss efSearch")
    p.add_argument(
        "--fanng-efs",
        type=int,
        nargs="*",
        default=[10, 16, 24, 32, 48, 64, 96],
        help="FANNG early-termination widths (search_ef); none: skip",
    )
    p.add_argument("--ef-budget-cap", type=int, default=4096, help="FANNG budget cap of the early-termination runs")
    p.add_argument(
        "--fanng-construction",
        nargs="+",
        default=["nn_descent"],
        help="FanngIndex constructions to compare (each builds its own graph): nn_descent, traverse_add or insert, "
        "optionally with constructor options, e.g. insert,target_success=0.5,build_ef=96",
    )
    p.add_argument("--embeddings", type=str, default=None, help="a (N, D) .npy file of real embeddings")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per setting; the median counts")
    p.add_argument(
        "--min-time", type=float, default=MIN_TIME, help="seconds per timed run: the call repeats until then"
    )
    args = p.parse_args()
    REPEATS = max(1, args.repeats)
    MIN_TIME = max(0.0, args.min_time)
    if args.quick:
        args.n, args.queries = 20_000, 500
        args.budgets, args.efs, args.fanng_efs = [128, 256, 512, 1024], [10, 40, 160], [10, 24, 48]
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if not args.skip_synthetic:
        allx = clustered(args.n + args.queries, args.dim, args.clusters, args.spread, seed=0)
        bench("clustered", allx[: args.n], allx[args.n :], args)
    if args.embeddings:
        emb = np.ascontiguousarray(np.load(args.embeddings), dtype=np.float32)
        perm = np.random.default_rng(0).permutation(emb.shape[0])
        nq = min(args.queries, emb.shape[0] // 10)
        bench(f"embeddings {args.embeddings}", emb[perm[nq:]], emb[perm[:nq]], args)


if __name__ == "__main__":
    main()
