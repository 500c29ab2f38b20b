"""Retrieval metrics of deep metric learning: Recall@K, NMI, MAP@R, R-precision and P@1 (ALGORITHMS.md §5).

Every query is ranked against a gallery by squared Euclidean distance: either all *other* items of the same set (the
query's own row removed by index, duplicates kept) or a separate reference set (query vs gallery, as In-Shop; nothing
removed). The k-NN (:mod:`smartmine.evaluation.knn`) yields query chunks and each chunk is reduced to per-query sums
at once, so memory is one distance tile (CPU) or ``(chunk × N)`` block (GPU, faiss) plus ``(chunk × k_max)``
neighbours — on the CPU also up to 256 MiB of ``N × k_max`` heaps in self-query mode — never ``N × N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from smartmine._validation import ArrayLike, check_embeddings, check_labels, check_positive_int
from smartmine.evaluation.knn import BACKENDS, FAISS_DEFAULT_CHUNK, iter_knn
from smartmine.index.exact import DEFAULT_BLOCK_BYTES, resolve_device

DEFAULT_KS = (1, 2, 4, 8)
RETRIEVAL_KEYS = ("map@r", "r_precision", "precision@1", "nmi")
"""The keys of :func:`retrieval_metrics` besides ``recall@K``, in the order tables show them."""


def is_retrieval_metric(key: str) -> bool:
    """``recall@K``, ``map@r``, ``r_precision``, ``precision@1`` and ``nmi``: the scores of :func:`retrieval_metrics`
    (higher is better, in ``[0, 1]``), not its counts."""
    return key.startswith("recall@") or key in RETRIEVAL_KEYS


def metric_sort_key(key: str) -> tuple[int, float, str]:
    """Order recall@1, recall@2, ... numerically, then the other retrieval metrics as :data:`RETRIEVAL_KEYS`."""
    if key.startswith("recall@"):
        try:
            return (0, float(key.split("@", 1)[1]), key)
        except ValueError:
            return (0, float("inf"), key)
    return (1, float(RETRIEVAL_KEYS.index(key)) if key in RETRIEVAL_KEYS else float("inf"), key)


def _check_ks(ks: Sequence[int], gallery_size: int, self_query: bool) -> tuple[int, ...]:
    if isinstance(ks, int | np.integer):
        ks = (int(ks),)
    if not isinstance(ks, Sequence) or len(ks) == 0:
        raise ValueError(f"ks: expected a non-empty sequence of positive integers, got {ks!r}")
    out = tuple(check_positive_int(k, "ks") for k in ks)
    limit = gallery_size - 1 if self_query else gallery_size
    if max(out) > limit:
        where = f"each query has only {limit} other items" if self_query else f"the reference set holds {limit} items"
        raise ValueError(f"ks: K={max(out)} is larger than the gallery ({where})")
    return out


def _default_chunk(n_gallery: int, k_max: int, backend: str, device: torch.device) -> int | None:
    """Query rows per k-NN block; ``None`` lets the CPU torch path use its own tile size (a tile is a few MiB)."""
    if backend == "torch" and device.type == "cpu":
        return None
    # Per query row: the float32 distance block (torch on GPU only) plus ~64 bytes per neighbour for the indices,
    # labels and the float64 per-position temporaries of MAP@R.
    per_row = 64 * k_max + (4 * n_gallery if backend == "torch" else 0)
    rows = max(1, DEFAULT_BLOCK_BYTES // per_row)
    return rows if backend == "torch" else min(rows, FAISS_DEFAULT_CHUNK)


def _positives_per_query(
    query_labels: torch.Tensor, ref_labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compact label ids of queries and gallery, and R (number of same-class gallery items) for every query."""
    if ref_labels is None:
        _, q_ids, counts = torch.unique(query_labels, return_inverse=True, return_counts=True)
        return q_ids, q_ids, counts[q_ids] - 1  # the query itself is not in its own gallery
    both = torch.cat([query_labels, ref_labels])
    _, ids = torch.unique(both, return_inverse=True)
    q_ids, r_ids = ids[: query_labels.numel()], ids[query_labels.numel() :]
    ref_counts = torch.bincount(r_ids, minlength=int(ids.max()) + 1)
    return q_ids, r_ids, ref_counts[q_ids]


KMEANS_BACKENDS = ("sklearn", "faiss")


def _faiss_kmeans(x: np.ndarray, n_clusters: int, seed: int, n_init: int, max_iter: int) -> np.ndarray:
    """Cluster ids ``(N,)`` from faiss's k-means (random initial centres, ``n_init`` restarts, no subsampling)."""
    try:
        import faiss  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("kmeans_backend='faiss' needs faiss: pip install 'smartmine[faiss]'") from exc
    km = faiss.Kmeans(
        x.shape[1], n_clusters, niter=max_iter, nredo=n_init, seed=seed, max_points_per_centroid=x.shape[0],
        verbose=False,
    )  # fmt: skip
    km.train(x)
    return km.index.search(x, 1)[1][:, 0]


def _nmi(
    embeddings: torch.Tensor, labels: torch.Tensor, seed: int, n_init: int, max_iter: int, backend: str = "sklearn"
) -> float:
    # Imported here: scikit-learn's import is slow and only NMI needs it.
    from sklearn.metrics import normalized_mutual_info_score  # noqa: PLC0415

    y = labels.cpu().numpy()
    n_clusters = int(np.unique(y).size)
    x = np.ascontiguousarray(embeddings.detach().cpu().numpy(), dtype=np.float32)
    if backend == "faiss":
        clusters = _faiss_kmeans(x, n_clusters, seed, n_init, max_iter)
    else:
        from sklearn.cluster import KMeans  # noqa: PLC0415

        clusters = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, clusters, average_method="arithmetic"))


def retrieval_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    reference_embeddings: ArrayLike | None = None,
    reference_labels: ArrayLike | Sequence[int] | None = None,
    compute_nmi: bool = True,
    backend: str = "torch",
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
    kmeans_n_init: int = 1,
    kmeans_max_iter: int = 300,
    kmeans_backend: str = "sklearn",
) -> dict[str, float | int]:
    """Recall@K, NMI, MAP@R, R-precision and P@1 of embeddings with class labels.

    Args:
        embeddings: ``(N, D)`` finite float query embeddings (NumPy or torch; any device).
        labels: ``(N,)`` integer class labels of the queries.
        ks: the K of Recall@K, default ``(1, 2, 4, 8)`` (SOP papers use ``(1, 10, 100, 1000)``). Each K must be at
            most the gallery size (``N - 1`` in self-query mode, ``M`` with a reference set).
        reference_embeddings: optional ``(M, D)`` gallery. When given, every query is ranked against this set and
            nothing is excluded (In-Shop protocol); when omitted, against all *other* rows of ``embeddings``.
        reference_labels: ``(M,)`` integer labels of the gallery; required with ``reference_embeddings``.
        compute_nmi: cluster the query embeddings and report ``nmi`` (the slowest part for many classes).
        backend: ``"torch"`` (exact tiled matrix products, ties by index; on the CPU the fastest path, using the
            symmetry of the self-query distance matrix) or ``"faiss"`` (``IndexFlatL2`` on the CPU; needs the
            optional faiss package).
        device: torch device of the k-NN (``"cuda"`` for a GPU); default: the device of ``embeddings``.
        chunk_size: query rows per k-NN block; default: 4096-row tiles on the CPU (:mod:`smartmine.index.exact`),
            otherwise sized from a 256 MiB block budget.
        seed: ``random_state`` of k-means.
        kmeans_n_init: k-means restarts (``n_init`` of scikit-learn's ``KMeans``), default 1 (k-means++ init).
        kmeans_max_iter: k-means Lloyd iterations at most, default 300 (scikit-learn's default).
        kmeans_backend: ``"sklearn"`` (default: k-means++ initialisation, exact Lloyd iterations) or ``"faiss"``
            (random initial centres, all points used; much faster with thousands of classes, e.g. SOP's 11k, where
            scikit-learn takes minutes; pytorch-metric-learning's choice). The two give slightly different NMI.

    Returns:
        A dict with

        - ``recall@K`` for each K: fraction of queries with at least one same-class item among their K nearest (the
          DML papers' Recall@K, not the information-retrieval recall).
        - ``precision@1``: fraction whose nearest neighbour is of the same class (equal to ``recall@1``).
        - ``r_precision``: mean over queries of the same-class fraction among the R nearest, where R is the number of
          same-class items in the gallery (other items of the class in self-query mode).
        - ``map@r``: mean over queries of ``(1/R) Σ_{i ≤ R, item i correct} precision@i`` (Musgrave et al. 2020).
        - ``nmi`` (only if ``compute_nmi``): k-means (``kmeans_backend``) on the query embeddings with as many
          clusters as query classes, seeded with ``seed``, then ``normalized_mutual_info_score`` with *arithmetic*
          normalisation (scikit-learn's default), ``2 I(Y; C) / (H(Y) + H(C))``. Uses all queries.
        - ``num_queries``: N; ``num_queries_without_positive``: queries whose class has no other item in the
          gallery (R = 0). These are left out of every retrieval metric above (their Recall/MAP@R are undefined),
          as pytorch-metric-learning's ``AccuracyCalculator`` does; they still count for NMI.

    Ties in distance are ranked by gallery index with the torch backend, so results are deterministic.

    Raises:
        ValueError: mismatched lengths, non-2-D or non-finite embeddings, non-integer labels, a K larger than the
            gallery, a reference set without labels (or vice versa), or no query with any same-class item.
    """
    q = check_embeddings(embeddings, "embeddings", min_rows=1)
    q_labels = check_labels(labels, q.shape[0], "labels")
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError("reference_labels: reference_embeddings and reference_labels must be given together")
    self_query = reference_embeddings is None
    if self_query:
        g, g_labels_raw = q, None
        if q.shape[0] < 2:
            raise ValueError("embeddings: self-query evaluation needs at least 2 items")
    else:
        g = check_embeddings(reference_embeddings, "reference_embeddings", min_rows=1)
        g_labels_raw = check_labels(reference_labels, g.shape[0], "reference_labels")
        if g.shape[1] != q.shape[1]:
            raise ValueError(
                f"reference_embeddings: dimension {g.shape[1]} does not match the embeddings' dimension {q.shape[1]}"
            )
    ks = _check_ks(ks, g.shape[0], self_query)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    kmeans_n_init = check_positive_int(kmeans_n_init, "kmeans_n_init")
    kmeans_max_iter = check_positive_int(kmeans_max_iter, "kmeans_max_iter")
    if kmeans_backend not in KMEANS_BACKENDS:
        raise ValueError(f"kmeans_backend: expected one of {KMEANS_BACKENDS}, got {kmeans_backend!r}")

    dev = resolve_device(device, q) if backend == "torch" else torch.device("cpu")
    q_ids, g_ids, r_all = _positives_per_query(q_labels.cpu(), None if g_labels_raw is None else g_labels_raw.cpu())
    valid_all = r_all > 0
    n_valid = int(valid_all.sum())
    if n_valid == 0:
        what = "every class has a single item" if self_query else "no query class occurs in reference_labels"
        raise ValueError(f"labels: no query has a same-class item in the gallery ({what})")
    k_max = max(max(ks), int(r_all.max()))
    if chunk_size is None:
        chunk_size = _default_chunk(g.shape[0], k_max, backend, dev)

    q_ids, g_ids, r_all, valid_all = (t.to(dev) for t in (q_ids, g_ids, r_all, valid_all))
    positions = torch.arange(1, k_max + 1, device=dev, dtype=torch.float64)
    hits_at = {k: torch.zeros((), dtype=torch.float64, device=dev) for k in ks}
    sum_rprec = torch.zeros((), dtype=torch.float64, device=dev)
    sum_map = torch.zeros((), dtype=torch.float64, device=dev)
    sum_p1 = torch.zeros((), dtype=torch.float64, device=dev)

    for start, _, idx in iter_knn(
        q, g, k_max, exclude_self=self_query, backend=backend, device=dev, chunk_size=chunk_size
    ):
        stop = start + idx.shape[0]
        valid = valid_all[start:stop]
        same = g_ids[idx.to(dev)] == q_ids[start:stop, None]  # (B, k_max)
        same, r = same[valid], r_all[start:stop][valid].to(torch.float64)
        for k in ks:
            hits_at[k] += same[:, :k].any(dim=1).sum()
        sum_p1 += same[:, 0].sum()
        # Only the first R positions count for R-precision and MAP@R.
        in_r = positions[None, :] <= r[:, None]
        hits = (same & in_r).to(torch.float64)
        sum_rprec += (hits.sum(dim=1) / r).sum()
        precision_at_i = hits.cumsum(dim=1) / positions
        sum_map += ((precision_at_i * hits).sum(dim=1) / r).sum()

    out: dict[str, float | int] = {f"recall@{k}": float(hits_at[k]) / n_valid for k in ks}
    if compute_nmi:
        out["nmi"] = _nmi(q, q_labels, seed, kmeans_n_init, kmeans_max_iter, kmeans_backend)
    out["map@r"] = float(sum_map) / n_valid
    out["r_precision"] = float(sum_rprec) / n_valid
    out["precision@1"] = float(sum_p1) / n_valid
    out["num_queries"] = int(q.shape[0])
    out["num_queries_without_positive"] = int(q.shape[0] - n_valid)
    return out
