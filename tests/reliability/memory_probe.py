"""Peak host memory of evaluation and smart-mining selection on N × D embeddings (run as a script, one job per process).

``python tests/reliability/memory_probe.py --what eval --n 1000000 --dim 64 [--queries Q]`` prints one JSON line with
``peak_rss_mib`` (``ru_maxrss`` of this process: the baseline interpreter + torch included) and the seconds taken.

* ``eval``: :func:`smartmine.evaluation.retrieval_metrics` (torch backend, CPU, no NMI). With ``--queries Q < N`` the
  first Q rows are ranked against the whole N-row gallery (``reference_embeddings``): the gallery, the distance tiles
  and the per-query neighbour buffers are allocated as in the full run, only the number of query tiles (time) shrinks.
* ``mining``: the selection stage of smart mining — :func:`smartmine.smart.selection.select_triplets` on ``(N, k)``
  neighbour lists plus :func:`smartmine.smart.plan.build_epoch_plan` for an N-triplet plan. The lists are sorted true
  squared distances to k candidates per point (half from the point's class); building an exact k-NN graph of 1M
  points would take hours on a 2-core CPU and is measured separately by the index benchmarks.
* ``miner``: the whole mining step of a mined epoch as the trainer runs it —
  :meth:`smartmine.smart.SmartMiner.plan_epoch` on the N × D embeddings with its defaults (exact k-NN on the CPU
  with ``k = max(64, 2 × largest class)``, strict selection, an N-triplet plan). This is the figure for "mining
  1M × 64 within 8 GiB"; at 1M it takes about an hour of a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def synthetic(n: int, dim: int, per_class: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: ``n // per_class`` classes around random centres (float32 ``(n, dim)``, int64 labels)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) // per_class
    rng.shuffle(labels)
    centres = rng.standard_normal((int(labels.max()) + 1, dim), dtype=np.float32)
    emb = centres[labels]
    emb += noise * rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, labels


def run_eval(emb: np.ndarray, labels: np.ndarray, queries: int) -> dict:
    import torch

    from smartmine.evaluation.metrics import retrieval_metrics

    emb_t = torch.from_numpy(emb)
    if queries >= len(labels):
        return retrieval_metrics(emb_t, labels, compute_nmi=False)
    return retrieval_metrics(emb_t[:queries], labels[:queries], reference_embeddings=emb_t, reference_labels=labels,
                             compute_nmi=False)  # fmt: skip


def run_mining(emb: np.ndarray, labels: np.ndarray, k: int, seed: int) -> dict:
    from smartmine.smart.plan import build_epoch_plan
    from smartmine.smart.selection import select_triplets

    n = len(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels)
    counts = np.bincount(labels)[labels]
    idx = np.empty((n, k), dtype=np.int64)
    half = k // 2
    idx[:, :half] = order[starts[:, None] + (rng.integers(0, 1 << 30, (n, half)) % counts[:, None])]
    idx[:, half:] = rng.integers(0, n, (n, k - half))
    self_hit = idx == np.arange(n)[:, None]
    idx[self_hit] = (idx[self_hit] + 1) % n
    d2 = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, 4096):  # blockwise: no (n, k, dim) temporary
        e = slice(s, min(n, s + 4096))
        d2[e] = ((emb[idx[e]] - emb[e][:, None, :]) ** 2).sum(-1)
    srt = np.argsort(d2, axis=1)
    idx, d2 = np.take_along_axis(idx, srt, 1), np.take_along_axis(d2, srt, 1)
    sel = select_triplets(idx, d2, labels, 16.0, rng)
    plan = build_epoch_plan(sel, labels, n, 0.5, rng)
    return {"mined_triplets": plan.num_mined, "random_triplets": plan.num_random}


def run_miner(emb: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from smartmine.smart.miner import SmartMiner

    miner = SmartMiner(adaptive=False, kappa=1.0, warmup_epochs=0, seed=seed)
    plan, stats = miner.plan_epoch(emb, labels, epoch=0)
    keys = ("k", "anchors_with_negatives", "index_seconds", "search_seconds", "selection_seconds")
    return {"mined_triplets": plan.num_mined, "random_triplets": plan.num_random, **{k: stats[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("eval", "mining", "miner"), required=True)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--queries", type=int, default=None, help="eval: query rows (default: all N)")
    parser.add_argument("--k", type=int, default=64, help="mining: neighbours per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.5, help="within-class noise around unit-variance centres")
    args = parser.parse_args()

    t0 = time.perf_counter()
    emb, labels = synthetic(args.n, args.dim, args.per_class, args.seed, args.noise)
    if args.what == "eval":
        out = run_eval(emb, labels, args.queries or args.n)
        out = {k: float(v) for k, v in out.items() if k in ("recall@1", "map@r", "num_queries")}
    elif args.what == "mining":
        out = run_mining(emb, labels, args.k, args.seed)
    else:
        out = run_miner(emb, labels, args.seed)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "what": args.what,
                "n": args.n,
                "dim": args.dim,
                "queries": args.queries,
                "k": args.k,
                "peak_rss_mib": round(peak_mib, 1),
                "seconds": round(time.perf_counter() - t0, 1),
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
