"""Benchmark: smartmine's ``retrieval_metrics`` against pytorch-metric-learning's ``AccuracyCalculator`` (faiss).

Both compute P@1, R-precision and MAP@R of the same random embeddings in self-query mode (each item queries all
others); smartmine additionally computes Recall@1/2/4/8. NMI is off by default for both (``--with-nmi`` turns it on:
smartmine clusters with scikit-learn's KMeans — or faiss's with method ``smartmine-faisskm`` — PML with faiss k-means,
20 iterations), because k-means with one
cluster per class dominates everything else at SOP-like class counts.

Data: ``N`` random 128-d Gaussian vectors, L2-normalised, float32, fixed seed. Labels (``--labels``): ``sop`` (default)
draws class sizes uniformly from 2..12 (mean 7, so N=100,000 has about 14,300 classes, R <= 11); ``large`` uses
classes of 1,000 items (N/1,000 classes, R = 999, so both libraries need ~1,000 neighbours per query). PML is run
with ``k="max_bin_count"`` (what its docs ask for MAP@R; its default ``k=None`` searches all N-1 neighbours, an N × N
result that cannot fit memory at 100k).

Every measurement runs in a fresh subprocess that first warms its library up on 600 points (imports, numba's compiled
kernels, faiss) and then times one call, so the peak resident memory (``ru_maxrss``) belongs to that process. The
table shows it next to the resident memory just before the timed call (interpreter, torch, the data), and the median
wall time of the repeats (the timed region is only the metric call) with the median CPU time (user + system, all
threads) of the same region, which other processes on a shared machine disturb far less than wall time. Repeats are
interleaved across methods.

    python benchmarks/eval_metrics.py            # N = 20k, 50k, 100k; 3 repeats each
    python benchmarks/eval_metrics.py --quick    # N = 2k, 5k; 3 repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

DIM = 128
METHODS = ("smartmine", "smartmine-faiss", "smartmine-faisskm", "pml")


LABEL_REGIMES = ("sop", "large")


def make_data(n: int, regime: str = "sop", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` L2-normalised Gaussian 128-d vectors and labels: SOP-like (class sizes uniform in 2..12) or classes of
    1,000 items (``regime="large"``)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 13, size=n // 2 + 1) if regime == "sop" else np.full(n // 1000 + 1, 1000)
    labels = np.repeat(np.arange(sizes.size), sizes)[:n]
    rng.shuffle(labels)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels.astype(np.int64)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(method: str, n: int, with_nmi: bool, regime: str) -> dict:
    """One timed metric call in this (fresh) process; returns seconds, RSS before and peak RSS (MiB)."""
    import torch

    x, y = make_data(n, regime)
    if method.startswith("smartmine"):
        from smartmine.evaluation.metrics import retrieval_metrics

        backend = "faiss" if method == "smartmine-faiss" else "torch"
        kmeans = "faiss" if method == "smartmine-faisskm" else "sklearn"

        def call(xx=x, yy=y, **kw):
            return retrieval_metrics(xx, yy, compute_nmi=with_nmi, backend=backend, kmeans_backend=kmeans, **kw)

        # Warm-up on 600 points in tiles of 128, so that every compiled kernel (cached on disk by numba after the
        # first run ever) is loaded before the timed call.
        call(x[:600], y[:600], chunk_size=128)

    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        include = ("precision_at_1", "r_precision", "mean_average_precision_at_r") + (("NMI",) if with_nmi else ())
        calc = AccuracyCalculator(include=include, k="max_bin_count", device=torch.device("cpu"))

        def call():
            return calc.get_accuracy(x, y)

        calc.get_accuracy(x[:600], y[:600])  # warm-up: faiss and PML's lazy imports and first-call set-up

    before = _rss_mib()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    p1 = result.get("precision@1", result.get("precision_at_1"))
    return {
        "nmi": result.get("nmi", result.get("NMI")),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "precision_at_1": p1,
    }


def measure(method: str, n: int, with_nmi: bool, regime: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(n), "--labels", regime]
    cmd += ["--with-nmi"] if with_nmi else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (2k, 5k): a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", help="override N (default 20000 50000 100000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median time is shown")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["smartmine", "pml"])
    parser.add_argument("--with-nmi", action="store_true", help="include NMI (k-means) in both")
    parser.add_argument("--labels", choices=LABEL_REGIMES, default="sop", help="label regime (see above)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.with_nmi, args.labels)))
        return

    sizes = args.sizes or ([2000, 5000] if args.quick else [20000, 50000, 100000])
    import torch

    what = "SOP-like classes of 2-12" if args.labels == "sop" else "classes of 1,000"
    print(f"# retrieval_metrics vs pytorch-metric-learning AccuracyCalculator ({DIM}-d, {what})")
    print(
        f"# {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"repeats {args.repeats}, NMI {'on' if args.with_nmi else 'off'}\n"
    )
    header = "| N | classes | method | median wall s | runs wall (s) | median CPU s | RSS before (MiB) |"
    print(header + " peak RSS (MiB) | P@1 | NMI |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for n in sizes:
        n_classes = np.unique(make_data(n, args.labels)[1]).size
        # Repeats are interleaved across methods (A, B, A, B, ...), so that load from other processes on a shared
        # machine falls on every method alike rather than on whichever ran during a busy spell.
        runs: dict[str, list[dict]] = {m: [] for m in args.methods}
        for _ in range(args.repeats):
            for method in args.methods:
                runs[method].append(measure(method, n, args.with_nmi, args.labels))
        wall, cpu = {}, {}
        for method in args.methods:
            secs = [r["seconds"] for r in runs[method]]
            wall[method] = statistics.median(secs)
            cpu[method] = statistics.median(r["cpu_seconds"] for r in runs[method])
            print(
                f"| {n:,} | {n_classes:,} | {method} | {wall[method]:.2f} | {', '.join(f'{s:.2f}' for s in secs)} | "
                f"{cpu[method]:.2f} | {max(r['rss_before_mib'] for r in runs[method]):.0f} | "
                f"{max(r['peak_rss_mib'] for r in runs[method]):.0f} | {runs[method][0]['precision_at_1']:.4f} | "
                f"{'–' if runs[method][0]['nmi'] is None else format(runs[method][0]['nmi'], '.4f')} |",
                flush=True,
            )
        if "pml" in wall and "smartmine" in wall:
            print(
                f"| {n:,} | | speed-up smartmine vs pml | {wall['pml'] / wall['smartmine']:.2f}x | | "
                f"{cpu['pml'] / cpu['smartmine']:.2f}x | | | | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
