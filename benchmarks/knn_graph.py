"""All-points k-NN (the mining self-join): exact search, smartmine's NN-descent, pynndescent, and a warm start.

Data: the overlapping-class set of ``benchmarks/mining_cost.py`` (N 64-d points in classes of ~60, within-class noise
1.0). For each N: ``ExactIndex().build(x).neighbours(k)`` (skipped above ``--exact-max``), ``nn_descent(x, k)`` (what
``FanngIndex.neighbours`` answers from), ``pynndescent.NNDescent(x, n_neighbors=k + 1)`` (its default settings, the
point itself dropped from its list), and a **warm start**: the embeddings move by ``--drift`` (Gaussian noise of that
standard deviation per coordinate, 10 % of the within-class spread by default, standing in for one epoch of training)
and ``nn_descent(x_moved, k, init=previous lists)`` runs (``--warm-candidates`` sets its ``max_candidates``, default
the cold runs'; ``FanngIndex`` warm starts sample ``min(2 k, 128)``); ``pynndescent-warm`` is pynndescent's own warm
start, ``NNDescent(x_moved, init_graph=its previous graph)`` (tree initialisation left on, its default, which was
faster than ``tree_init=False``). Recall@k on 1,000 sampled points against exact search
(``exact_knn`` on the sample only). With ``--no-forest``, also ``nn_descent(x, k, n_trees=0)``: the start without a
random-projection forest (sessions 4-19). ``--max-candidates S`` sets both NN-descents' candidates per point and
iteration (``max_candidates``; default each one's own: 64 ours, 60 pynndescent's; ``--pynndescent-candidates``
overrides it for pynndescent alone), ``--list-k L`` builds lists of ``L >= k`` entries with both and measures recall@k
of their first ``k`` (longer lists converge to better first entries), ``--methods`` picks the methods (``ours``,
``pynndescent``, ``warm``, ``pynndescent-warm``, ``no-forest``, ``exact``; default all but ``no-forest`` and
``pynndescent-warm``) and ``--skip-warm`` drops the warm
start. Each method runs ``--repeats`` times round-robin after a warm-up on 2,000 points (every run's seconds go to
stderr as it ends); medians are reported. Peak memory is not measured here (see ``mining_cost.py``).

    python benchmarks/knn_graph.py --sizes 100000
    python benchmarks/knn_graph.py --sizes 1000000 --exact-max 0 --repeats 2 --no-forest
    python benchmarks/knn_graph.py --sizes 1000000 --exact-max 0 --repeats 1 --skip-warm --max-candidates 128
    python benchmarks/knn_graph.py --sizes 1000000 --repeats 1 --methods ours --max-candidates 256
    python benchmarks/knn_graph.py --sizes 1000000 --repeats 1 --methods pynndescent --list-k 80
    python benchmarks/knn_graph.py --sizes 100000 --drift 0.3 --warm-candidates 128 \
        --methods ours warm pynndescent pynndescent-warm

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

from mining_cost import clustered_labelled  # noqa: E402


def sampled_truth(x: np.ndarray, k: int, n_sample: int = 1_000) -> tuple[np.ndarray, np.ndarray]:
    """Rows sampled for recall and their exact ``k`` nearest other points."""
    from smartmine.index.exact import exact_knn

    rows = np.random.default_rng(1).choice(x.shape[0], size=min(n_sample, x.shape[0]), replace=False)
    truth = exact_knn(x[rows], x, k + 1)[1].numpy()
    return rows, np.array([t[t != r][:k] for r, t in zip(rows, truth, strict=True)])


def recall(idx: np.ndarray, rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(idx[r], t).size / t.size for r, t in zip(rows, truth, strict=True)]))


def run_exact(x: np.ndarray, k: int) -> np.ndarray:
    from smartmine.index.exact import ExactIndex

    return ExactIndex().build(x).neighbours(k)[1]


def run_ours(
    x: np.ndarray,
    k: int,
    threads: int,
    init: np.ndarray | None = None,
    n_trees: int | None = None,
    max_candidates: int | None = None,
) -> np.ndarray:
    from smartmine.index.knn_graph import nn_descent

    return nn_descent(x, k, init=init, n_threads=threads, seed=0, n_trees=n_trees, max_candidates=max_candidates).idx


def run_pynndescent(
    x: np.ndarray,
    k: int,
    threads: int,
    max_candidates: int | None = None,
    init_graph: np.ndarray | None = None,
    with_self: bool = False,
) -> np.ndarray | None:
    """pynndescent's lists of ``k`` other points (``n_neighbors = k + 1``, the point itself dropped unless
    ``with_self``: then its whole ``(N, k + 1)`` graph, as ``init_graph`` takes it); ``init_graph`` starts it from a
    previous graph. None when it is not installed."""
    try:
        import pynndescent
    except ImportError:
        return None
    idx = pynndescent.NNDescent(
        x, n_neighbors=k + 1, random_state=0, n_jobs=threads, max_candidates=max_candidates, init_graph=init_graph
    ).neighbor_graph[0]
    if with_self:
        return idx
    own = idx == np.arange(x.shape[0])[:, None]
    own[~own.any(axis=1), -1] = True  # rows without themselves: drop the farthest
    keep = ~(own & (np.cumsum(own, axis=1) == 1))
    return idx[keep].reshape(x.shape[0], k)


def bench_size(n: int, args: argparse.Namespace) -> None:
    """One table block: every method at ``n`` points."""
    x, _ = clustered_labelled(n, args.dim, 60, 1.0, seed=0)
    moved = np.ascontiguousarray(x + args.drift * np.random.default_rng(2).normal(size=x.shape).astype(np.float32))
    rows, truth = sampled_truth(x, args.k)
    rows_m, truth_m = sampled_truth(moved, args.k)
    s, s_p, lk = args.max_candidates, args.pynndescent_candidates or args.max_candidates, args.list_k or args.k
    methods = set(args.methods) - ({"warm"} if args.skip_warm else set()) | ({"no-forest"} if args.no_forest else set())
    w = x[:2000]  # warm-up: compilation / numba cache loads
    if methods & {"ours", "warm", "no-forest"}:
        run_ours(w, 8, args.threads)
    if methods & {"pynndescent", "pynndescent-warm"}:
        run_pynndescent(w, 8, args.threads)
    if "pynndescent-warm" in methods:  # its init_graph path compiles other functions
        run_pynndescent(w, 8, args.threads, init_graph=run_pynndescent(w, 8, args.threads, with_self=True))
    cases = {}
    if "ours" in methods:
        cases["smartmine nn_descent"] = (lambda: run_ours(x, lk, args.threads, max_candidates=s), rows, truth)
    if "pynndescent" in methods:
        cases["pynndescent"] = (lambda: run_pynndescent(x, lk, args.threads, max_candidates=s_p), rows, truth)
    if "warm" in methods:
        prev = run_ours(x, lk, args.threads, max_candidates=s)
        cases["smartmine nn_descent, warm start after drift"] = (
            lambda: run_ours(moved, lk, args.threads, init=prev, max_candidates=args.warm_candidates or s),
            rows_m,
            truth_m,
        )
    if "pynndescent-warm" in methods:
        prev_p = run_pynndescent(x, lk, args.threads, max_candidates=s_p, with_self=True)
        cases["pynndescent, warm start after drift (init_graph)"] = (
            lambda: run_pynndescent(moved, lk, args.threads, max_candidates=s_p, init_graph=prev_p),
            rows_m,
            truth_m,
        )
    if "no-forest" in methods:
        cases["smartmine nn_descent, no forest (n_trees=0)"] = (lambda: run_ours(x, lk, args.threads, n_trees=0),
                                                                 rows, truth)  # fmt: skip
    if "exact" in methods and n <= args.exact_max:
        cases["exact (ExactIndex.neighbours)"] = (lambda: run_exact(x, args.k), rows, truth)
    times: dict[str, list[float]] = {m: [] for m in cases}
    found: dict[str, np.ndarray | None] = {}
    for _ in range(args.repeats):
        for m, (fn, _, _) in cases.items():
            t = time.perf_counter()
            found[m] = fn()
            times[m].append(time.perf_counter() - t)
            print(f"{n:,} {m}: {times[m][-1]:.2f} s", file=sys.stderr, flush=True)
    for m, (_, r, tr) in cases.items():
        if found[m] is None:
            print(f"| {n:,} | {m} | not installed | |")
            continue
        idx = found[m][:, : args.k]  # type: ignore[index]
        print(f"| {n:,} | {m} | {np.median(times[m]):.2f} | {recall(idx, r, tr):.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--drift", type=float, default=0.1, help="per-coordinate noise of the warm-start epoch")
    p.add_argument("--exact-max", type=int, default=200_000, help="skip exact search above this N")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-forest", action="store_true", help="also run nn_descent with the start of sessions 4-19")
    p.add_argument("--max-candidates", type=int, default=None, help="both NN-descents' max_candidates")
    p.add_argument("--skip-warm", action="store_true", help="no warm start")
    p.add_argument("--warm-candidates", type=int, default=None, help="max_candidates of our warm start (default: "
                   "--max-candidates)")  # fmt: skip
    p.add_argument("--pynndescent-candidates", type=int, default=None, help="pynndescent's max_candidates alone")
    p.add_argument("--list-k", type=int, default=None, help="list length L >= k of both NN-descents (recall@k of the "
                   "first k entries; default k)")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=["ours", "pynndescent", "warm", "exact"],
                   choices=["ours", "pynndescent", "warm", "pynndescent-warm", "no-forest", "exact"])  # fmt: skip
    args = p.parse_args()
    if args.list_k is not None and args.list_k < args.k:
        p.error(f"--list-k: expected at least --k ({args.k}), got {args.list_k}")
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"{args.dim}-d, classes of ~60, spread 1.0, k = {args.k}, {args.threads} threads, drift {args.drift}, "
          f"max_candidates {args.max_candidates or 'default'} (warm start {args.warm_candidates or 'the same'}) "
          f"(pynndescent {args.pynndescent_candidates or args.max_candidates or 'default'}), lists of "
          f"{args.list_k or args.k}\n")  # fmt: skip
    print("| N | method | seconds (median) | recall@k |")
    print("|---:|---|---:|---:|")
    for n in args.sizes:
        bench_size(n, args)


if __name__ == "__main__":
    main()
