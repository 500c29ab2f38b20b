"""Cost of one smart-mining step against training-set size: all-points k-NN plus Algorithm 1 selection.

For each size N (default 10k, 100k, 1M; ``--quick``: 10k, 50k) and each backend — ``ExactIndex`` (torch, CPU),
``FanngIndex`` and ``FaissIndex`` (HNSW) — a fresh subprocess generates N clustered 64-d vectors with labels
(classes of about ``--class-size`` points around standard-normal centres, within-class noise ``--spread``; the
default 1.0 makes neighbouring classes overlap, as in embeddings during training, so that selection has negatives to
find), then times

1. ``index.build(x)``,
2. ``index.neighbours(k)`` (every point's k nearest others, default k = 64),
3. ``smartmine.smart.selection.select_triplets`` on those lists (κ = ``--kappa``, strict selection),

``fanng-warm`` is a warm-started epoch: a FANNG index built on the points, which then move by Gaussian noise of std
``--warm-drift`` per coordinate (10 % of the within-class spread by default, milder than a training epoch: 0.3 gives
the drift check's share of 0.71-0.76 that the stored training runs record, docs/BENCHMARKS.md session 15); its
"build" is ``index.update(moved)`` and recall is measured on the moved points (``cold_recall`` in its JSON line: the
lists of the cold build before the move; ``--warm-reserve`` / ``--warm-accept`` set ``FanngIndex``'s
``warm_reserve`` / ``warm_accept_recall``). ``FanngIndex`` runs with ``knn_k = k``, so its construction's k-NN lists
are the mining lists;

and reports each time, the selection's share of the total, recall@k of the neighbour lists on 1,000 sampled points
(against exact search) and the subprocess's peak resident memory (``ru_maxrss``, includes the interpreter, torch and
the data). A combination whose predicted time (extrapolated from the same backend at the previous size: N² for exact
search, N^1.3 for FANNG, N^1.15 for HNSW) exceeds ``--time-limit`` seconds is skipped and listed as such.

A separate row times selection alone at CUB-200-2011 training size (5,864 images, 100 classes) to compare with an
epoch's time (``--epoch-seconds``, an assumption stated in the output, not a measurement).

    python benchmarks/mining_cost.py --quick
    python benchmarks/mining_cost.py                      # 10k, 100k, 1M
    python benchmarks/mining_cost.py --device cuda        # ExactIndex on the GPU (FANNG/faiss stay on the CPU)

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

METHODS = ("exact", "fanng", "fanng-warm", "faiss")
EXPONENT = {"exact": 2.0, "fanng": 1.3, "fanng-warm": 1.3, "faiss": 1.15}  # for predicting the next size's time only
CUB_TRAIN = (5_864, 100)  # images and classes of the CUB-200-2011 training split used in metric learning


def clustered_labelled(n: int, dim: int, class_size: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 points in ``max(1, n // class_size)`` Gaussian classes (labels shuffled), int64 labels."""
    rng = np.random.default_rng(seed)
    n_classes = max(1, n // class_size)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    x = centres[labels] + spread * rng.normal(size=(n, dim)).astype(np.float32)
    return x.astype(np.float32), labels.astype(np.int64)


def make_index(method: str, args: argparse.Namespace):
    if method == "exact":
        from smartmine.index.exact import ExactIndex

        return ExactIndex(device=args.device)
    if method in ("fanng", "fanng-warm"):
        from smartmine.index.fanng import FanngIndex

        # knn_k = k: the construction's k-NN lists are the mining lists (no second pass in neighbours).
        return FanngIndex(
            search_budget=args.fanng_budget, knn_k=args.k, n_threads=args.threads, seed=0,
            warm_rejoin_shift=None if args.rejoin_shift < 0 else args.rejoin_shift,
            warm_reserve=args.warm_reserve, warm_accept_recall=args.warm_accept,
            warm_iters=None if args.warm_iters <= 0 else args.warm_iters,
        )  # fmt: skip
    from smartmine.index.faiss_index import FaissIndex

    return FaissIndex(kind="hnsw", hnsw_m=32, ef_construction=80, ef_search=args.faiss_ef, n_threads=args.threads)


def sampled_recall(x: np.ndarray, idx: np.ndarray, k: int, n_sample: int = 1_000) -> float:
    """Recall@k of neighbour lists ``idx`` on ``n_sample`` random points, against exact search (self excluded)."""
    from smartmine.index.exact import exact_knn

    rows = np.random.default_rng(1).choice(x.shape[0], size=min(n_sample, x.shape[0]), replace=False)
    truth = exact_knn(x[rows], x, k + 1)[1].numpy()
    hits = 0
    for r, t in zip(rows, truth, strict=True):
        hits += len(set(t[t != r][:k].tolist()) & set(idx[r].tolist()))
    return hits / (rows.size * k)


def worker(method: str, n: int, args: argparse.Namespace) -> dict:
    """One (method, N) cell, run in its own process so that peak RSS is its own."""
    import torch

    from smartmine.smart.selection import select_triplets

    torch.set_num_threads(args.threads)
    class_size = CUB_TRAIN[0] // CUB_TRAIN[1] if method == "select-only" else args.class_size
    x, labels = clustered_labelled(n, args.dim, class_size, args.spread, seed=0)
    out: dict = {"method": method, "n": n, "classes": int(labels.max()) + 1}
    if method == "select-only":
        # Selection alone on exact neighbour lists (CUB-size row).
        from smartmine.index.exact import ExactIndex

        d, i = ExactIndex().build(x).neighbours(args.k)
        t = time.perf_counter()
        for _ in range(5):
            select_triplets(i, d, labels, args.kappa, np.random.default_rng(0))
        out["select_s"] = (time.perf_counter() - t) / 5
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out
    index = make_index(method, args)
    # Warm-up: numba compilation / cache load and thread pools, for the index and for the selection kernel.
    wd, wi = make_index(method, args).build(x[:200]).neighbours(3)
    select_triplets(wi, wd, labels[:200], args.kappa, np.random.default_rng(0))
    if method == "fanng-warm":
        # The previous epoch's graph, then this epoch's embeddings: moved by Gaussian noise of std --warm-drift.
        t = time.perf_counter()
        index.build(x)
        out["cold_build_s"] = time.perf_counter() - t
        out["cold_recall"] = sampled_recall(x, index.neighbours(args.k)[1], args.k)
        x = x + args.warm_drift * np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    t = time.perf_counter()
    index.update(x) if method == "fanng-warm" else index.build(x)
    out["build_s"] = time.perf_counter() - t
    if method == "fanng-warm":
        out["warm_start"] = index.stats_["warm_start"]
        out["drift_recall"] = index.stats_["drift_recall"]
        out["warm_joined"] = index.stats_.get("warm_joined")
    t = time.perf_counter()
    d, i = index.neighbours(args.k)
    out["knn_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res = select_triplets(i, d, labels, args.kappa, np.random.default_rng(0))
    out["select_s"] = time.perf_counter() - t
    out["mined"] = int(res.anchors.size)
    out["without_negative"] = int(res.num_without_negative)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["recall"] = sampled_recall(x, i, args.k) if method != "exact" else 1.0
    return out


def run_cell(method: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(n)] + args.passthrough
    # Passive OpenMP waiting: faiss's and torch's spinning worker threads would otherwise steal the CPU from the
    # selection step that follows them in the same process.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        return {"method": method, "n": n, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 10k and 50k only")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--class-size", type=int, default=60, help="mean points per class")
    p.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="within-class noise (1.0: classes overlap)",
    )
    p.add_argument("--k", type=int, default=64, help="neighbours per point")
    p.add_argument("--kappa", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device of ExactIndex")
    p.add_argument("--fanng-budget", type=int, default=512, help="FanngIndex search_budget")
    p.add_argument("--faiss-ef", type=int, default=128, help="FaissIndex ef_search")
    p.add_argument("--warm-drift", type=float, default=0.1, help="fanng-warm: per-coordinate embedding drift")
    p.add_argument(
        "--rejoin-shift", type=int, default=-1, help="fanng-warm: FanngIndex warm_rejoin_shift (-1: None, every entry)"
    )
    p.add_argument(
        "--warm-reserve", type=int, default=0, help="FanngIndex warm_reserve: extra list entries kept for warm starts"
    )
    p.add_argument(
        "--warm-accept", type=float, default=0.98, help="FanngIndex warm_accept_recall (above 1: always NN-descent)"
    )
    p.add_argument(
        "--warm-iters", type=int, default=0, help="FanngIndex warm_iters: a warm start's iteration cap (0: knn_iters)"
    )
    p.add_argument("--time-limit", type=float, default=300.0, help="skip cells predicted to take longer (seconds)")
    p.add_argument("--epoch-seconds", type=float, default=30.0, help="assumed epoch time at CUB size (seconds)")
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args)))
        return
    # Options every worker needs (everything but --quick/--sizes/--methods, which only drive the loop).
    args.passthrough = [
        "--dim", str(args.dim), "--class-size", str(args.class_size), "--spread", str(args.spread), "--k", str(args.k),
        "--kappa", str(args.kappa), "--threads", str(args.threads), "--device", args.device,
        "--fanng-budget", str(args.fanng_budget), "--faiss-ef", str(args.faiss_ef),
        "--warm-drift", str(args.warm_drift), "--rejoin-shift", str(args.rejoin_shift),
        "--warm-reserve", str(args.warm_reserve), "--warm-accept", str(args.warm_accept),
        "--warm-iters", str(args.warm_iters),
    ]  # fmt: skip
    if args.quick:
        args.sizes = [10_000, 50_000]
    print(f"{args.dim}-d clustered, classes of ~{args.class_size}, k = {args.k}, κ = {args.kappa}, "
          f"{args.threads} threads, ExactIndex on {args.device}\n")  # fmt: skip
    rows, skipped = [], []
    for method in args.methods:
        last: tuple[int, float] | None = None
        for n in sorted(args.sizes):
            if last is not None:
                pred = last[1] * (n / last[0]) ** EXPONENT[method]
                if pred > args.time_limit:
                    skipped.append(f"{method} at N = {n:,}: predicted {pred:,.0f} s > --time-limit {args.time_limit:g}")
                    continue
            r = run_cell(method, n, args)
            print("  ", json.dumps(r), flush=True)
            rows.append(r)
            if "error" not in r:
                last = (n, r["build_s"] + r["knn_s"] + r["select_s"])
    print("\n| N | method | build s | k-NN s | select s | total s | select share | recall@k | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["n"], METHODS.index(r["method"]))):
        if "error" in r:
            print(f"| {r['n']:,} | {r['method']} | error: {r['error']} | | | | | | |")
            continue
        tot = r["build_s"] + r["knn_s"] + r["select_s"]
        print(
            f"| {r['n']:,} | {r['method']} | {r['build_s']:.2f} | {r['knn_s']:.2f} | {r['select_s']:.3f} | {tot:.2f} "
            f"| {100 * r['select_s'] / tot:.1f}% | {r['recall']:.3f} | {r['peak_rss_mib']:,.0f} |"
        )
    for s in skipped:
        print(f"- skipped: {s}")
    cub = run_cell("select-only", CUB_TRAIN[0], args)
    if "error" not in cub:
        share = 100 * cub["select_s"] / args.epoch_seconds
        print(
            f"\nSelection alone at CUB size (N = {CUB_TRAIN[0]:,}, {cub['classes']} classes, k = {args.k}): "
            f"{1000 * cub['select_s']:.1f} ms = {share:.3f}% of an assumed {args.epoch_seconds:g} s epoch"
        )


if __name__ == "__main__":
    main()
