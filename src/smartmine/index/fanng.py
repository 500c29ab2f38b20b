"""FANNG: a directed nearest-neighbour graph searched by backtracking (Harwood & Drummond, CVPR 2016).

Construction (ALGORITHMS.md §4), all in compiled numba kernels (:mod:`smartmine.index._fanng_kernels`), in one of three
ways (``construction``):

* ``"nn_descent"`` (default, ours, parallel: :mod:`smartmine.index.fanng_build`): approximate ``knn_k``-NN lists by
  NN-descent (:mod:`smartmine.index.knn_graph`), occlusion pruning of each vertex's list, reverse edges re-pruned,
  then steps 1, 3 and 4 below, where Traverse-Add now only repairs the pairs downhill search still misses. Only the
  lists are computed by ``build``; the graph follows on first use (a search or an inspection such as ``csr``), so
  the mining self-join never pays for it (its warnings and ``stats_`` entries appear then). The lists are kept:
  :meth:`FanngIndex.neighbours` answers from them, and :meth:`FanngIndex.update` (a new epoch's embeddings of the
  same points) starts NN-descent from them and offers the previous graph's edges, if one was built, as candidates.
* ``"insert"`` (ours, parallel: :mod:`smartmine.index.fanng_insert`): the vertices are inserted in batches, each
  searching the graph built so far for its candidates (beam width ``build_ef``), keeping those the occlusion rule lets
  through and offering the reverse edges (Vamana/NSG-style insertion with FANNG's own rule), then steps 1, 3 and 4.
  The fastest build when the graph is needed for search only: no k-NN lists are kept, so ``neighbours`` searches
  and ``update`` is a cold build.
* ``"traverse_add"``: the paper's construction from an empty graph, steps 1-4.

1. **Traverse-Add** on random vertex pairs until the running success rate of naive downhill search between random
   pairs reaches ``target_success`` (the paper's 0.98 for ``"traverse_add"``, 0.5 after the parallel constructions,
   whose graphs already hold every neighbourhood; see the class). Every vertex keeps its out-edges sorted by length
   with none occluded by a shorter one (``u→v`` occludes ``u→w`` iff ``D(u,v) < D(u,w)`` and ``D(v,w) < D(u,w)``).
2. Optional **refinement** (``refine > 0`` passes, ``"traverse_add"`` only): each vertex's edges are re-chosen from its
   current edges plus the nearest vertices that backtrack search finds for it, re-pruned by occlusion, and capped at
   ``max_degree``.
3. **Reachability repair** (ours, ``ensure_reachable``): Traverse-Add(start, v) for every vertex v that downhill search
   from the start vertex misses, so that every indexed point can be found from the start.
4. Out-degree cap: each vertex keeps its ``max_degree`` shortest edges.

Search is the paper's **backtrack search** with a budget of distance computations, starting from the vertex nearest
the centroid (``search``) or from the point itself (``neighbours``), parallel over queries: the GIL-free kernels run
on row ranges from a thread pool (no ``parallel=True``, whose compilation would cost more than the tests themselves).

Memory layout (ours; no effect on results beyond tie order): vertices are stored in the leaf order of a
random-projection tree during construction and renumbered breadth-first from the start vertex afterwards, so that
the vectors a search or a Traverse-Add touches together sit together in memory. Search reads one cache-aligned
packed row per vertex (vector, edge range, first point, duplicate group: ``_fanng_kernels.pack_rows``), so
``vertex_vectors`` is a view into that table. Vertex ids seen through ``out_edges``/``vertex_vectors``/``vertex_of``
are these internal ids.

Exact duplicate vectors are merged into one vertex before construction (a graph of points at distance 0 from each
other would need an edge between every pair of them); a visited vertex contributes all of its duplicates to the
results, and ``neighbours`` removes only the point's own index.
"""

from __future__ import annotations

import threading
import time
import warnings

import numba
import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order

from smartmine._threads import run_chunks
from smartmine._validation import ArrayLike, check_embeddings, check_positive_int
from smartmine.index import _fanng_kernels as K
from smartmine.index import _knn_kernels as KK
from smartmine.index._prefetch import prefetch_min_bytes
from smartmine.index.base import NeighbourIndex, check_warm_lists, drop_self, to_numpy_f32
from smartmine.index.fanng_build import dense_to_csr, grow_random_pairs, knn_prune_graph
from smartmine.index.fanng_insert import insert_graph
from smartmine.index.knn_graph import KnnLists, nn_descent, spatial_order


def _check_fraction(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a number in (0, 1], got {value!r}") from exc
    if not 0.0 < v <= 1.0:
        raise ValueError(f"{name}: expected a number in (0, 1], got {value!r}")
    return v


def _check_nonneg_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


class _Scratch:
    """Per-thread search scratch: the visited bits and list, and the heap (see ``search_range``)."""

    def __init__(self, nv: int, budget: int, width: int, ef: int = 0) -> None:
        self.vbits = np.zeros(-(-nv // 64), dtype=np.uint64)
        self.vlist = np.empty(budget + 1, dtype=np.int64)
        self.heap = np.empty(budget + 1, dtype=np.int64)
        self.efbuf = np.empty(max(ef, 1), dtype=np.float32)  # early termination (``search_ef``) only
        self.seen = np.full(nv if width else 0, -1, dtype=np.int32)  # refinement only
        self.cbuf = np.empty(width, dtype=np.int32)
        self.lbuf = np.empty(width, dtype=np.float32)


CONSTRUCTIONS = ("nn_descent", "traverse_add", "insert")
# Downhill success target of the random pairs per construction (target_success=None): the paper's for its own
# construction; the parallel ones start from graphs that already link every neighbourhood (docs/BENCHMARKS.md).
DEFAULT_TARGET_SUCCESS = {"traverse_add": 0.98, "nn_descent": 0.5, "insert": 0.5}
_GRAPH_LOCK = threading.RLock()  # one lazy graph build at a time (module-level: instances stay picklable)


class FanngIndex(NeighbourIndex):
    """Approximate k-NN by a FANNG graph with backtrack search.

    Args:
        target_success: the random-pair Traverse-Add stops once this fraction of the last ``success_window`` random
            pairs is reached by naive downhill search. Default ``None``: 0.98 (the paper's value) for
            ``construction="traverse_add"``, 0.5 for ``"nn_descent"`` and ``"insert"``, whose graphs already link
            every vertex to its neighbourhood: there the pairs only add the long edges, and at 100k × 64 a target of
            0.5 built 9× faster than 0.98 and searched as well or better per distance computation (recall@10 at a
            budget of 512: 0.932 against 0.912; docs/BENCHMARKS.md, session 16). Higher: more Traverse-Add work and
            more edges, each search step dearer.
        max_degree: out-degree cap, each vertex keeps its shortest edges (default 30; the paper reports 15–30).
            ``None``: no cap. Lower: less memory, faster search steps, lower recall per distance computation.
        search_budget: distance computations per query in backtrack search (default 512). The main speed/recall knob:
            search time is proportional to it; can be overridden per call in :meth:`search`.
        search_ef: early termination, **beyond the paper** (default ``None``: off, the paper's search spends its whole
            budget). With a value ``ef`` the search also stops once every unexplored edge starts at a vertex farther
            from the query than the ``ef``-th nearest vertex found so far (HNSW's stopping rule; raised to ``k`` when
            smaller). The budget stays a hard cap. Larger ``ef``: higher recall, slower; it adapts the work to each
            query, where a fixed budget spends the same on easy and hard ones. Overridable per call in :meth:`search`.
        search_prefetch: how many edges ahead backtrack search prefetches the rows of the vertices it is about to
            visit (a memory-latency hint, no effect on results). Default ``None``: 6 when the packed vertex table
            (about ``N * (D + 5) * 4`` bytes, rounded up to 64 per row) is larger than 16 times the per-core L2
            cache (Linux sysfs; 32 MiB when unknown), else 0, because a table that stays close to the core only pays
            for the prefetching code (on this project's 2-core machine, 2 MiB of L2: 15-30 % per visit on tables of
            1.7-16 MB, even at 32 MB, 40 % faster with it at 92 MB; docs/BENCHMARKS.md, session 17). Refinement
            searches follow the same rule.
        refine: refinement passes after Traverse-Add (default 1; 0 disables). Each pass costs about ``N`` backtrack
            searches of ``refine_budget`` and usually raises recall at a given budget.
        refine_budget: distance computations of each refinement search (default 128).
        refine_candidates: nearest vertices of each refinement search offered as new edges (default 32).
        ensure_reachable: after construction, repair every vertex that downhill search from the start vertex does not
            reach (default True; our addition, it guarantees the start vertex sees the whole graph). The repair edges
            may exceed ``max_degree`` on the few vertices that need them.
        success_window: number of most recent random pairs over which the success rate is measured (default 1000).
        max_pairs: safety limit on the random pairs of step 1 (default ``200 * N + 10 * success_window``). Reaching it
            stops construction with a ``RuntimeWarning`` (the graph is still usable, just less connected).
        max_ops: safety limit on the calls of one Traverse-Add cascade (default ``100 * N + 10_000``); a cascade that
            exceeds it (never observed on real data) stops construction with a ``RuntimeWarning``.
        seed: seed of the random pairs; construction and search are deterministic for a given seed and input.
        n_threads: threads for search, refinement and the parallel construction (default:
            ``numba.get_num_threads()``); the compiled kernels release the GIL and run on disjoint row ranges. Results
            do not depend on it. Traverse-Add itself is sequential.
        construction: ``"nn_descent"`` (default, ours, parallel; :mod:`smartmine.index.fanng_build`): candidate edges
            from approximate ``knn_k``-NN lists (NN-descent), occlusion-pruned per vertex, reverse edges re-pruned, then
            Traverse-Add on the random pairs downhill search still misses (``target_success``) and the reachability
            repair (at 100k × 64 5.5-6.2 s against hnswlib's 6.3-7.1 s since NN-descent starts from a forest,
            docs/BENCHMARKS.md, session 20). ``"insert"`` (ours, parallel; :mod:`smartmine.index.fanng_insert`): batched
            insertion, each vertex's edges chosen by occlusion from a beam search of the graph so far, reverse edges
            re-pruned, then the same random pairs and repair; the fastest build for search-only use (at 100k × 64 about
            hnswlib's build time, docs/BENCHMARKS.md, session 16), but no lists are kept: ``neighbours`` searches and
            ``update`` builds cold. ``"traverse_add"``: the paper's sequential Traverse-Add from an empty graph, then
            ``refine`` passes (``refine*`` apply to this construction only).
        knn_k: neighbours per vertex of the NN-descent lists (default 32); also the list length :meth:`neighbours`
            answers from without a further pass. Larger: better graph, slower build.
        knn_iters: NN-descent iteration cap (default 10; it stops earlier once an iteration changes < 0.1 %).
        warm_min_recall: drift check of :meth:`update` (default 0.3): the previous lists must still hold at least this
            fraction of the true ``knn_k`` nearest neighbours of ``warm_check_points`` sampled points under the new
            embeddings, otherwise :meth:`update` builds from scratch.
        warm_check_points: points sampled by the drift check (default 256; exact search over all points for each).
        warm_pairs: whether :meth:`update` also runs Traverse-Add on random pairs until ``target_success`` (default
            False: it keeps the reachability repair only). The previous graph's edges, offered as candidates, keep the
            graph navigable: measured at 20k × 64 clustered with a 10 % drift, recall@10 at budget 256 was 0.980
            without the pairs, 0.970 with them (545k pairs) and 0.971 for a cold build.
        warm_rejoin_shift: a warm start's first NN-descent join takes as new only the list entries that are new or
            moved more than this many ranks since the previous lists (``nn_descent``'s ``rejoin_shift``). Default
            ``None``: every entry, as in a cold build.
        warm_reserve: extra entries per NN-descent list beyond ``knn_k`` (default 0), kept for warm starts: a warm
            start first re-ranks the previous ``knn_k + warm_reserve`` entries under the new points, which brings
            back the neighbours that moved in from just beyond rank ``knn_k`` without any local join. Costs a longer
            cold build (NN-descent lists of ``knn_k + warm_reserve``); the graph is built from the first ``knn_k``.
            At 100k × 64, k = 64, a 10 % drift: re-ranking 128-entry lists gave recall@64 0.995 against 0.976 for
            NN-descent from 64-entry lists, in 18-20 % of a cold build's time (docs/BENCHMARKS.md, session 15). A
            training epoch usually moves embeddings further than a reserve covers, so ``SmartMiner`` leaves it at 0.
        warm_accept_recall: a warm start keeps the previous lists re-ranked under the new points, without any
            NN-descent join, when the drift check finds that they still hold at least this fraction of the true
            ``knn_k`` nearest neighbours (default 0.98; re-ranked, exactly those make up the first ``knn_k``
            entries); otherwise NN-descent iterations start from them as before. ``stats_["warm_joined"]`` says which.
            Above 1 (e.g. 2.0): always run NN-descent.
        warm_candidates: candidates sampled per point and iteration by a warm start's NN-descent (``nn_descent``'s
            ``max_candidates``). Default ``None``: ``min(2 * L, 128)`` for lists of ``L`` entries, twice a cold
            build's ``min(L, 64)``. Starting from stale lists, the cold build's sample converged to worse lists than a
            cold build: at 100k × 64, k = 64, after a drift as large as a training epoch's, 64 candidates gave
            recall@64 0.960 in 10.7-11.1 s, 128 gave 0.975 in 11.9 s (cold build: 0.974-0.978 in 20-21 s); after
            the benchmark's milder drift 0.976 in 7.8-8.4 s against 0.981 in 9.6 s (docs/BENCHMARKS.md, session 15).
        warm_iters: NN-descent iteration cap of a warm start only (default ``None``: ``knn_iters``; cold builds
            are never capped). ``1``: one local join from the previous lists, for users who accept lists of lower
            recall to save time: at 100k × 64, k = 64, after a drift as large as a training epoch's, a warm epoch
            took 4.7-5.7 s at recall@64 0.922 against 10.7 s at 0.974 by default (cold builds 12-15 s at 0.976); at
            300k 22-24 s at 0.857 against 43-46 s at 0.945 (cold 56-60 s).
            Lists of recall 0.61-0.93 trained the glyph study's task and a head on cub100's frozen features as well
            as exact lists (docs/BENCHMARKS.md, session 25).
        build_ef: beam width of each vertex's search in ``construction="insert"`` (default 64): the nearest vertices
            found are its candidate edges. Larger: slower build; at 100k × 64, 32 / 64 / 96 gave recall@10 0.911 /
            0.925 / 0.922 at a search budget of 512.

    After :meth:`build`, ``stats_`` holds construction statistics (pairs tried, success rate, edges, degrees,
    seconds per phase).
    """

    name = "fanng"

    def __init__(
        self,
        target_success: float | None = None,
        max_degree: int | None = 30,
        search_budget: int = 512,
        search_ef: int | None = None,
        refine: int = 1,
        refine_budget: int = 128,
        refine_candidates: int = 32,
        ensure_reachable: bool = True,
        success_window: int = 1000,
        max_pairs: int | None = None,
        max_ops: int | None = None,
        seed: int = 0,
        n_threads: int | None = None,
        construction: str = "nn_descent",
        knn_k: int = 32,
        knn_iters: int = 10,
        warm_min_recall: float = 0.3,
        warm_check_points: int = 256,
        warm_pairs: bool = False,
        warm_rejoin_shift: int | None = None,
        warm_reserve: int = 0,
        warm_accept_recall: float = 0.98,
        warm_candidates: int | None = None,
        warm_iters: int | None = None,
        build_ef: int = 64,
        search_prefetch: int | None = None,
    ) -> None:
        super().__init__()
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"construction: expected one of {CONSTRUCTIONS}, got {construction!r}")
        self.construction = construction
        self.build_ef = check_positive_int(build_ef, "build_ef")
        self.knn_k = check_positive_int(knn_k, "knn_k")
        self.knn_iters = check_positive_int(knn_iters, "knn_iters")
        self.warm_min_recall = _check_fraction(warm_min_recall, "warm_min_recall")
        self.warm_check_points = check_positive_int(warm_check_points, "warm_check_points")
        self.warm_pairs = bool(warm_pairs)
        self.warm_rejoin_shift = None if warm_rejoin_shift is None else _check_nonneg_int(
            warm_rejoin_shift, "warm_rejoin_shift"
        )
        self.warm_reserve = _check_nonneg_int(warm_reserve, "warm_reserve")
        if not isinstance(warm_accept_recall, (int, float)) or not warm_accept_recall >= 0:
            raise ValueError(f"warm_accept_recall: expected a number >= 0, got {warm_accept_recall!r}")
        self.warm_accept_recall = float(warm_accept_recall)
        self.warm_candidates = None if warm_candidates is None else check_positive_int(
            warm_candidates, "warm_candidates"
        )
        self.warm_iters = None if warm_iters is None else check_positive_int(warm_iters, "warm_iters")
        self._knn_i: np.ndarray | None = None  # (V, knn_k + warm_reserve) vertex lists of construction="nn_descent"
        self._knn_d: np.ndarray | None = None
        self._pending: tuple | None = None  # construction="nn_descent": the graph's inputs until it is first needed
        self._graph_in_progress = False  # set while the lazy build runs (its own calls must not start it again)
        self.target_success = None if target_success is None else _check_fraction(target_success, "target_success")
        self.max_degree = None if max_degree is None else check_positive_int(max_degree, "max_degree")
        self.search_budget = check_positive_int(search_budget, "search_budget")
        self.search_ef = None if search_ef is None else check_positive_int(search_ef, "search_ef")
        self.search_prefetch = (
            None if search_prefetch is None else _check_nonneg_int(search_prefetch, "search_prefetch")
        )
        self.refine = _check_nonneg_int(refine, "refine")
        self.refine_budget = check_positive_int(refine_budget, "refine_budget")
        self.refine_candidates = check_positive_int(refine_candidates, "refine_candidates")
        self.ensure_reachable = bool(ensure_reachable)
        self.success_window = check_positive_int(success_window, "success_window")
        self.max_pairs = None if max_pairs is None else check_positive_int(max_pairs, "max_pairs")
        self.max_ops = None if max_ops is None else check_positive_int(max_ops, "max_ops")
        self.seed = _check_nonneg_int(seed, "seed")
        self.n_threads = None if n_threads is None else check_positive_int(n_threads, "n_threads")
        self.stats_: dict[str, float] = {}
        self._block: np.ndarray = np.zeros((0, 16), np.float32)  # packed vertex table, see K.pack_rows
        self._x: np.ndarray = self._block[:, :0]  # (V, D) distinct vectors: a view of the packed table
        self._indptr: np.ndarray = np.zeros(1, np.int64)
        self._indices: np.ndarray = np.empty(0, np.int32)
        self._marked: np.ndarray = self._indices  # search's copy of _indices, see K.mark_last_edges
        self._gptr: np.ndarray = np.zeros(1, np.int64)  # vertex v's points: _gmem[_gptr[v]:_gptr[v+1]]
        self._gmem: np.ndarray = np.empty(0, np.int64)
        self._vertex_of: np.ndarray = np.empty(0, np.int64)  # point -> vertex
        self._start: int = 0

    # ------------------------------------------------------------------------------------------------------------
    # Graph inspection
    # ------------------------------------------------------------------------------------------------------------

    @property
    def n_vertices(self) -> int:
        """Number of graph vertices: the distinct indexed vectors."""
        return int(self._x.shape[0])

    @property
    def start_vertex(self) -> int:
        """The vertex nearest the centroid, where :meth:`search` starts."""
        self._ensure_graph()
        return self._start

    @property
    def vertex_of(self) -> np.ndarray:
        """``(N,)`` int64: the graph vertex of each indexed point (duplicates share one)."""
        self._ensure_graph()
        return self._vertex_of

    def vertex_points(self, v: int) -> np.ndarray:
        """Indices of the indexed points merged into vertex ``v`` (ascending; more than one only for duplicates)."""
        self._ensure_graph()
        return self._gmem[self._gptr[v] : self._gptr[v + 1]]

    def vertex_vectors(self) -> np.ndarray:
        """``(V, D)`` float32 vectors of the vertices: a read-only view of the packed search table (not contiguous)."""
        self._ensure_graph()
        view = self._x.view()
        view.flags.writeable = False
        return view

    def out_edges(self, v: int) -> np.ndarray:
        """Out-neighbours (vertex ids) of vertex ``v``, ascending by edge length."""
        self._ensure_graph()
        return self._indices[self._indptr[v] : self._indptr[v + 1]]

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """The graph as CSR ``(indptr (V+1,) int64, indices (E,) int32)`` over vertex ids."""
        self._ensure_graph()
        return self._indptr, self._indices

    # ------------------------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------------------------

    def _threads(self) -> int:
        return self.n_threads if self.n_threads is not None else numba.get_num_threads()

    def _build(self, x: torch.Tensor) -> None:
        self._construct(to_numpy_f32(x, "x"), init=None)

    def _prepare(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Distinct vectors ``xv`` in spatial order, each point's vertex and the start vertex (nearest the centroid)."""
        # Merge exact duplicates (vertices are renumbered twice: spatially for construction, breadth-first at the end).
        _, first, inverse = np.unique(pts, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        vertex_of = rank[inverse].astype(np.int64)
        xv = pts[first[order]]
        nv = xv.shape[0]
        # Spatial pre-order (ours, a memory-layout choice only): construction touches vertices near each other together,
        # so storing nearby vectors together saves cache misses (about 1.25x faster Traverse-Add at 50k × 64).
        perm = spatial_order(xv, self.seed)
        new_id = np.empty(nv, dtype=np.int64)
        new_id[perm] = np.arange(nv)
        xv = np.ascontiguousarray(xv[perm])
        vertex_of = new_id[vertex_of]
        centroid = xv.mean(axis=0, dtype=np.float64).astype(np.float32)
        start = int(np.argmin(((xv - centroid) ** 2).sum(axis=1)))
        return xv, vertex_of, start

    def _construct(
        self,
        pts: np.ndarray,
        init: np.ndarray | None,
        warm_stats: dict | None = None,
        init_edges: np.ndarray | None = None,
        rerank_ok: bool = False,
    ) -> None:
        """Build the graph over ``pts`` (``(N, D)`` float32). Warm start (``construction="nn_descent"`` only):
        ``init`` and ``init_edges``, per-point candidate point ids (``(N, C)``, ``-1`` padded) from the previous lists
        and the previous graph's out-edges; ``rerank_ok``: the previous lists may be kept, re-ranked, without a
        join."""
        t0 = time.perf_counter()
        n = pts.shape[0]
        xv, vertex_of, start = self._prepare(pts)
        nv = xv.shape[0]
        t_prep = time.perf_counter() - t0

        t1 = time.perf_counter()
        if self.construction == "nn_descent" and nv > 1:
            cand = None if init is None else self._vertex_candidates(init, vertex_of, nv)
            width = min(self.knn_k + self.warm_reserve, nv - 1)
            # rerank_ok (the drift check passed warm_accept_recall): keep the previous lists, re-ranked. Only lists at
            # least as long as this build's qualify (a reserve added since falls through to NN-descent, which fills it).
            rerank = rerank_ok and cand is not None and cand.shape[1] >= width
            if cand is not None and warm_stats is not None:
                warm_stats["warm_joined"] = 0.0 if rerank else 1.0
            if rerank:
                lists = nn_descent(xv, width, init=cand, n_threads=self._threads(), order=np.arange(nv), max_iters=0)
            else:
                sample, iters = None, self.knn_iters  # a cold build: nn_descent's min(width, 64) candidates
                if cand is not None:
                    sample = self.warm_candidates if self.warm_candidates is not None else min(2 * width, 128)
                    iters = self.warm_iters if self.warm_iters is not None else self.knn_iters
                lists = nn_descent(
                    xv, width, init=cand, seed=self.seed, n_threads=self._threads(), order=np.arange(nv),
                    max_iters=iters, rejoin_shift=None if cand is None else self.warm_rejoin_shift,
                    max_candidates=sample,
                )  # fmt: skip
            knn_stats = lists.stats
            t_knn = time.perf_counter() - t1
            # The graph is built when first needed (search or inspection): mining needs only the lists.
            self._set_points(xv, vertex_of)
            self._store_lists(lists, np.arange(nv))
            prev = None if init_edges is None else self._vertex_candidates(init_edges, vertex_of, nv)
            self._pending = (xv, vertex_of, start, prev, init is not None)
            self.stats_ = {
                "n_points": float(n), "n_vertices": float(nv), "knn_iterations": float(knn_stats["iterations"]),
                "knn_candidates": float(knn_stats.get("candidates", 0.0)),
                "warm_start": 0.0, "seconds_prepare": t_prep, "seconds_knn": t_knn,
                **(warm_stats or {}),
            }  # fmt: skip
            self.stats_["seconds_total"] = time.perf_counter() - t0 + self.stats_.get("seconds_drift_check", 0.0)
            return
        self._pending = None
        stats = {"seconds_prepare": t_prep, **(warm_stats or {})}
        self._graph_stage(xv, vertex_of, start, None, None, False, stats, t0)

    def _ensure_graph(self) -> None:
        """Build the pending graph of ``construction="nn_descent"`` from the stored lists (no-op once built)."""
        if self._pending is None:
            return
        # Threads that search a fresh index at once: the first builds, the others wait for it; ``_pending`` is cleared
        # only once the graph is complete, so nobody searches a half-built graph.
        with _GRAPH_LOCK:
            if self._pending is None or self._graph_in_progress:  # built meanwhile, or called from the build itself
                return
            xv, vertex_of, start, prev, warm = self._pending
            assert self._knn_i is not None and self._knn_d is not None
            lists = KnnLists(self._knn_d, self._knn_i.astype(np.int64))
            self._graph_in_progress = True
            try:
                self._graph_stage(xv, vertex_of, start, lists, prev, warm, self.stats_, time.perf_counter())
                self._pending = None
            finally:
                self._graph_in_progress = False

    def _graph_stage(
        self,
        xv: np.ndarray,
        vertex_of: np.ndarray,
        start: int,
        lists: KnnLists | None,
        prev: np.ndarray | None,
        warm: bool,
        stats: dict,
        t0: float,
    ) -> None:
        """Construction after the k-NN lists: the graph from ``lists`` (``None``: the paper's Traverse-Add from an
        empty graph), refinement, cap, repair, breadth-first renumbering; ``stats`` gains the graph's statistics."""
        n, nv = vertex_of.size, xv.shape[0]
        window = min(self.success_window, max(1, nv * (nv - 1)))
        max_pairs = self.max_pairs if self.max_pairs is not None else 200 * nv + 10 * window
        max_ops = self.max_ops if self.max_ops is not None else 100 * nv + 10_000
        cap = -1 if self.max_degree is None else self.max_degree
        t1 = time.perf_counter()
        if lists is not None:
            t_knn = 0.0
            # The graph's candidates are the first knn_k entries: a warm_reserve serves warm starts only.
            gw = lists.idx.shape[1] if not self.warm_reserve else min(self.knn_k, lists.idx.shape[1])
            nbr, lens, deg = knn_prune_graph(xv, lists.idx[:, :gw], lists.sq_dist[:, :gw], cap, self._threads(), prev)
            # Traverse-Add on the random pairs that downhill search still misses, until the paper's success rate (a warm
            # start measures the rate on one window of pairs only, unless warm_pairs).
            target = self._target_success() if not warm or self.warm_pairs else 0.0
            nbr, lens, n_pairs, rate, n_dist, status = grow_random_pairs(
                xv, nbr, lens, deg, target, window, self.seed, max_pairs, max_ops, self._threads()
            )
        elif self.construction == "insert":
            t_knn = 0.0
            nbr, lens, deg, n_ins, n_batches = insert_graph(
                xv, start, cap, self.build_ef, self.seed, self._threads()
            )
            stats = {**stats, "insert_distances": float(n_ins), "insert_batches": float(n_batches),
                     "seconds_insert": time.perf_counter() - t1}  # fmt: skip
            nbr, lens, n_pairs, rate, n_dist, status = grow_random_pairs(
                xv, nbr, lens, deg, self._target_success(), window, self.seed, max_pairs, max_ops, self._threads()
            )
        else:
            t_knn = 0.0
            nbr = np.full((nv, 16), -1, dtype=np.int32)
            lens = np.full((nv, 16), np.inf, dtype=np.float32)
            deg = np.zeros(nv, dtype=np.int32)
            nbr, lens, n_pairs, rate, n_dist, status = K.grow_graph(
                xv, nbr, lens, deg, -1, self._target_success(), window, self.seed, max_pairs, max_ops, 0
            )
        t_ta = time.perf_counter() - t1 - t_knn
        self._warn_status(status, n_pairs, rate, max_pairs, max_ops)
        deg_ta = float(deg.mean()) if nv else 0.0

        t2 = time.perf_counter()
        for _ in range(self.refine if nv > 1 and self.construction == "traverse_add" else 0):
            nbr, lens, deg = self._refine_pass(xv, *dense_to_csr(nbr, deg), cap)
        t_refine = time.perf_counter() - t2

        t3 = time.perf_counter()
        n_repaired = n_unreached = 0
        if nv > 1:
            # Cap first, then repair: the repair's few extra edges are what keeps every vertex reachable.
            if cap >= 0 and nbr.shape[1] > cap:
                nbr, lens = nbr[:, :cap].copy(), lens[:, :cap].copy()
                np.minimum(deg, cap, out=deg)
            if self.ensure_reachable:
                nbr, lens, n_repaired, unreached, _, status = K.grow_graph(
                    xv, nbr, lens, deg, start, 1.0, 1, 0, 0, max_ops, 4
                )
                n_unreached = int(unreached)
                self._warn_status(status, n_pairs, rate, max_pairs, max_ops)
        indptr, indices = dense_to_csr(nbr, deg)
        t_repair = time.perf_counter() - t3

        # Renumber the vertices in breadth-first order from the start vertex, so that vertices a search visits
        # together sit close together in memory (fewer cache misses per distance computation).
        t4 = time.perf_counter()
        new_of_old = self._set_graph(xv, indptr, indices, vertex_of, start)
        self._store_lists(lists, new_of_old)
        t_order = time.perf_counter() - t4

        degrees = np.diff(self._indptr)
        self.stats_ = {
            **stats,
            "n_points": float(n),
            "n_vertices": float(nv),
            "n_pairs": float(n_pairs),
            "pairs_per_vertex": float(n_pairs) / max(nv, 1),
            "success_rate": float(rate),
            "construction_distances": float(n_dist),
            "mean_degree_traverse_add": deg_ta,
            "n_repaired": float(n_repaired),
            "n_unreached_downhill": float(n_unreached),
            "n_edges": float(self._indices.size),
            "mean_degree": float(degrees.mean()) if nv else 0.0,
            "max_degree": float(degrees.max(initial=0)),
            "seconds_traverse_add": t_ta,
            "seconds_refine": t_refine,
            "seconds_repair": t_repair,
            "seconds_reorder": t_order,
        }
        self.stats_.setdefault("knn_iterations", 0.0)
        self.stats_.setdefault("warm_start", 0.0)
        self.stats_.setdefault("seconds_knn", t_knn)
        self.stats_["seconds_graph"] = time.perf_counter() - t0

    def _set_graph(
        self, xv: np.ndarray, indptr: np.ndarray, indices: np.ndarray, vertex_of: np.ndarray, start: int
    ) -> np.ndarray:
        """Store the graph with vertices renumbered breadth-first from ``start`` (unreached vertices last); returns the
        renumbering (new id of every old vertex)."""
        nv = xv.shape[0]
        graph = csr_matrix((np.ones(indices.size, np.int8), indices, indptr), shape=(nv, nv))
        bfs = breadth_first_order(graph, start, directed=True, return_predecessors=False).astype(np.int64)
        if bfs.size < nv:
            missing = np.ones(nv, dtype=bool)
            missing[bfs] = False
            bfs = np.concatenate([bfs, np.flatnonzero(missing)])
        new_of_old = np.empty(nv, dtype=np.int64)
        new_of_old[bfs] = np.arange(nv)
        degrees = np.diff(indptr)[bfs]
        new_indptr = np.zeros(nv + 1, dtype=np.int64)
        np.cumsum(degrees, out=new_indptr[1:])
        # Position in the old ``indices`` of every new edge: row bfs[i]'s edges, in their (ascending) order.
        src = np.repeat(indptr[:-1][bfs] - new_indptr[:-1], degrees) + np.arange(new_indptr[-1])
        self._indices = new_of_old[indices[src]].astype(np.int32)
        self._marked = K.mark_last_edges(new_indptr, self._indices)  # what search reads
        self._indptr = new_indptr
        self._start = int(new_of_old[start])
        self._set_points(xv[bfs], new_of_old[vertex_of])
        self._block = K.pack_rows(xv[bfs], new_indptr, self._gptr, self._gmem)
        self._x = self._block[:, : xv.shape[1]]
        return new_of_old

    def _set_points(self, xv: np.ndarray, vertex_of: np.ndarray) -> None:
        """Store the vertex vectors and each point's vertex, with the vertices' point groups (``_gptr``/``_gmem``)."""
        nv = xv.shape[0]
        self._x = xv
        self._vertex_of = vertex_of
        self._gmem = np.argsort(vertex_of, kind="stable").astype(np.int64)
        self._gptr = np.zeros(nv + 1, dtype=np.int64)
        np.cumsum(np.bincount(vertex_of, minlength=nv), out=self._gptr[1:])

    def _store_lists(self, lists: KnnLists | None, new_of_old: np.ndarray) -> None:
        """Keep the vertices' k-NN lists (final vertex numbering) for :meth:`neighbours` and warm starts."""
        if lists is None:
            self._knn_i, self._knn_d = None, None
            return
        idx = np.where(lists.idx >= 0, new_of_old[np.maximum(lists.idx, 0)], -1).astype(np.int32)
        self._knn_i = np.empty_like(idx)
        self._knn_d = np.empty_like(lists.sq_dist)
        self._knn_i[new_of_old] = idx
        self._knn_d[new_of_old] = lists.sq_dist

    def _vertex_candidates(self, init: np.ndarray, vertex_of: np.ndarray, nv: int) -> np.ndarray:
        """Per-point candidate point ids ``init`` (``(N, C)``, ``-1`` padded) as candidate vertex ids of each vertex
        (those of its first point)."""
        rep = np.empty(nv, dtype=np.int64)
        rep[vertex_of[::-1]] = np.arange(vertex_of.size - 1, -1, -1)  # first point of every vertex
        rows = init[rep]
        return np.where(rows >= 0, vertex_of[np.maximum(rows, 0)], -1)

    def _point_lists(self) -> np.ndarray:
        """The stored vertex lists as ``(N, K)`` point ids per point (first point of each listed vertex)."""
        assert self._knn_i is not None
        first = self._gmem[self._gptr[:-1]]
        rows = self._knn_i[self._vertex_of]
        return np.where(rows >= 0, first[np.maximum(rows, 0)], -1)

    def _refine_pass(
        self, xv: np.ndarray, indptr: np.ndarray, indices: np.ndarray, cap: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One refinement pass: each vertex's out-edges are re-chosen from its current edges plus the
        ``refine_candidates`` nearest vertices that backtrack search (from the vertex itself, ``refine_budget``
        distance computations) finds for it, re-pruned by occlusion and capped at ``cap`` (``< 0``: no cap). Reads the
        old graph and writes a new one (Jacobi style), so the result does not depend on thread scheduling."""
        nv = xv.shape[0]
        kk = min(self.refine_candidates + 1, nv)
        budget = max(self.refine_budget, kk)
        ef = 0  # refinement spends its whole budget, as in the paper
        width = int(np.diff(indptr).max(initial=0)) + kk
        nbr = np.full((nv, width), -1, dtype=np.int32)
        lens = np.full((nv, width), np.inf, dtype=np.float32)
        deg = np.zeros(nv, dtype=np.int32)
        rows = np.arange(nv, dtype=np.int64)  # vertex v's only point is v itself during construction
        block = K.pack_rows(xv, indptr, np.arange(nv + 1, dtype=np.int64), rows)
        lookahead = self._lookahead(block)
        marked = K.mark_last_edges(indptr, indices)

        def work(lo: int, hi: int, scratch: _Scratch) -> None:
            cd = np.empty((hi - lo, kk), dtype=np.float32)
            ci = np.empty((hi - lo, kk), dtype=np.int64)
            nd = np.empty(hi - lo, dtype=np.int32)
            K.search_range(
                block, xv.shape[1], marked, rows, block, rows[lo:hi], rows[lo:hi], kk, budget, 0, hi - lo, cd,
                ci, nd, scratch.vbits, scratch.vlist, scratch.heap, ef, scratch.efbuf, lookahead,
            )  # fmt: skip
            K.prune_range(
                xv, indptr, indices, ci, cd, lo, hi, cap, nbr, lens, deg, scratch.seen, scratch.cbuf, scratch.lbuf
            )

        self._parallel(nv, nv, budget, width, work)
        return nbr, lens, deg

    def _parallel(self, n_rows: int, nv: int, budget: int, width: int, work, ef: int = 0) -> None:
        """Run ``work(lo, hi, scratch)`` over row chunks of ``range(n_rows)`` on ``n_threads`` threads of the shared
        pool (the kernels release the GIL); each thread owns one :class:`_Scratch` for the call."""
        threads = max(1, min(self._threads(), n_rows))
        chunk = max(1, min(4096, -(-n_rows // (4 * threads))))
        bounds = [(lo, min(n_rows, lo + chunk)) for lo in range(0, n_rows, chunk)]
        local = threading.local()

        def run(lo: int, hi: int) -> None:
            if not hasattr(local, "s"):
                local.s = _Scratch(nv, budget, width, ef)
            work(lo, hi, local.s)

        run_chunks(run, bounds, threads)

    def _target_success(self) -> float:
        """``target_success``, or the construction's default when it is ``None`` (see the class)."""
        if self.target_success is not None:
            return self.target_success
        return DEFAULT_TARGET_SUCCESS[self.construction]

    def _warn_status(self, status: int, n_pairs: int, rate: float, max_pairs: int, max_ops: int) -> None:
        if status == K.STATUS_MAX_PAIRS:
            warnings.warn(
                f"FanngIndex: construction stopped after max_pairs={max_pairs} random pairs with a downhill success "
                f"rate of {rate:.3f} < target_success={self._target_success()}; the graph is usable but search may "
                "need a larger budget (raise max_pairs or lower target_success)",
                RuntimeWarning,
                stacklevel=3,
            )
        elif status == K.STATUS_MAX_OPS:
            warnings.warn(
                f"FanngIndex: a Traverse-Add cascade exceeded max_ops={max_ops} calls after {n_pairs} pairs "
                f"(success rate {rate:.3f}); construction was stopped there to guarantee termination",
                RuntimeWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------------------------------------------------
    # Search
    # ------------------------------------------------------------------------------------------------------------

    def search(
        self, queries: ArrayLike, k: int, budget: int | None = None, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed points of every query, by backtrack search from the start vertex.

        Args:
            queries: ``(Q, D)`` finite float matrix.
            k: neighbours per query, ``1 <= k <= size``.
            budget: distance computations per query; default ``search_budget``. Raised to ``k`` when smaller.
            ef: early-termination width for this call; default ``search_ef`` (see the class). ``0`` turns it off.

        Returns:
            ``(sq_distances float32, indices int64)`` of shape ``(Q, k)``, ascending; a row that reached fewer than
            ``k`` points is padded with ``inf`` / ``-1``.
        """
        self._budget_override = None if budget is None else check_positive_int(budget, "budget")
        self._ef_override = None if ef is None else check_positive_int(ef, "ef", minimum=0)
        try:
            return super().search(queries, k)
        finally:
            self._budget_override = None
            self._ef_override = None

    def _effective_budget(self, k: int) -> int:
        b = getattr(self, "_budget_override", None) or self.search_budget
        return max(int(b), int(k))

    def _effective_ef(self, k: int) -> int:
        """The early-termination width: 0 when off, else at least ``k``."""
        ef = getattr(self, "_ef_override", None)
        if ef is None:
            ef = self.search_ef or 0
        return max(int(ef), int(k)) if ef > 0 else 0

    def _lookahead(self, block: np.ndarray) -> int:
        """Prefetch depth of backtrack search over the packed table ``block`` (see ``search_prefetch``)."""
        if self.search_prefetch is not None:
            return self.search_prefetch
        return K.LOOKAHEAD if block.nbytes > prefetch_min_bytes() else 0

    def _run(self, queries: np.ndarray, qrows: np.ndarray, starts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Backtrack search of ``queries[qrows[i]]`` from vertex ``starts[i]`` for every ``i``, in parallel."""
        self._ensure_graph()
        nq = qrows.shape[0]
        budget = self._effective_budget(k)
        ef = self._effective_ef(k)
        out_d = np.empty((nq, k), dtype=np.float32)
        out_i = np.empty((nq, k), dtype=np.int64)
        n_dist = np.empty(nq, dtype=np.int32)
        block, dim, marked, gmem = self._block, self._x.shape[1], self._marked, self._gmem
        lookahead = self._lookahead(block)

        def work(lo: int, hi: int, scratch: _Scratch) -> None:
            K.search_range(
                block, dim, marked, gmem, queries, qrows, starts, k, budget, lo, hi, out_d, out_i, n_dist,
                scratch.vbits, scratch.vlist, scratch.heap, ef, scratch.efbuf, lookahead,
            )  # fmt: skip

        self._parallel(nq, self.n_vertices, budget, 0, work, ef)
        self.last_distance_computations_ = n_dist
        return out_d, out_i

    def _search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._ensure_graph()
        q = to_numpy_f32(queries, "queries")
        rows = np.arange(q.shape[0], dtype=np.int64)
        return self._run(q, rows, np.full(q.shape[0], self._start, dtype=np.int64), k)

    def _neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.construction == "nn_descent":
            return self._list_neighbours(k)
        # Each point is its own query, starting from its own vertex; k + 1 results, then the point itself is dropped.
        d, i = self._run(self._block, self._vertex_of, self._vertex_of, k + 1)
        return drop_self(d, i, k)

    def _list_neighbours(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All-points k-NN from the NN-descent lists of construction (``k <= knn_k``: no further work), or from a
        longer NN-descent started from them (kept for the next call and the next :meth:`update`)."""
        nv = self.n_vertices
        if nv < 2:  # one vertex: the other points are its duplicates, no list needed
            self._knn_i, self._knn_d = np.empty((nv, 0), np.int32), np.empty((nv, 0), np.float32)
        elif self._knn_i is None or self._knn_i.shape[1] < min(k, nv - 1):
            x = np.ascontiguousarray(self._x)
            cand = None if self._knn_i is None else np.concatenate([self._knn_i, self._graph_dense()], axis=1)
            lists = nn_descent(
                x, max(1, min(k, nv - 1)), init=cand, seed=self.seed, n_threads=self._threads(),
                max_iters=self.knn_iters,
            )  # fmt: skip
            self._store_lists(lists, np.arange(nv))
        assert self._knn_i is not None and self._knn_d is not None
        out_d = np.empty((self._n, k), dtype=np.float32)
        out_i = np.empty((self._n, k), dtype=np.int64)
        KK.expand_points(self._knn_i, self._knn_d, self._vertex_of, self._gptr, self._gmem, k, out_i, out_d)
        return out_d, out_i

    def _graph_dense(self) -> np.ndarray:
        """The out-edges as a dense ``(V, max degree)`` int32 table, ``-1`` padded."""
        deg = np.diff(self._indptr)
        out = np.full((self.n_vertices, max(int(deg.max(initial=0)), 1)), -1, dtype=np.int32)
        out[np.arange(out.shape[1])[None, :] < deg[:, None]] = self._indices
        return out

    # ------------------------------------------------------------------------------------------------------------
    # Warm start
    # ------------------------------------------------------------------------------------------------------------

    def update(self, x: ArrayLike) -> FanngIndex:
        """Re-index the same points after they moved (a new epoch's embeddings), starting from this graph's k-NN lists.

        Row ``i`` of ``x`` must be the point that was row ``i`` of the previous :meth:`build`/:meth:`update` (same
        ``N`` and ``D``; a different count or dimension raises ``ValueError``). A drift check measures, on
        ``warm_check_points`` sampled points, the recall of the previous lists against exact search under the new
        embeddings; below ``warm_min_recall`` (or with a construction other than ``"nn_descent"``, or before any
        build) this is a cold :meth:`build`. Otherwise NN-descent starts from the previous lists and the graph is
        rebuilt from them as in :meth:`build`, with the same guarantees (occlusion rule, reachability from the start
        vertex).

        ``stats_`` records ``warm_start`` (1.0 or 0.0), ``drift_recall`` and ``seconds_drift_check``. Returns ``self``.
        """
        if self._n == 0 or self.construction != "nn_descent" or self._knn_i is None:
            return self.build(x)
        t = check_embeddings(x, "x", min_rows=1)
        if t.shape[0] != self._n:
            raise ValueError(
                f"x: update needs the same {self._n} points as the previous build (row i the same point), got "
                f"{t.shape[0]} rows; call build(x) for a different set"
            )
        if t.shape[1] != self._dim:
            raise ValueError(f"x: dimension {t.shape[1]} does not match the index dimension {self._dim}")
        prev = self._point_lists()
        first = self._gmem[self._gptr[:-1]]
        prev_edges = None
        if self._pending is None:  # a graph was built (searched): its edges are candidates too
            edges = self._graph_dense()[self._vertex_of]
            prev_edges = np.where(edges >= 0, first[np.maximum(edges, 0)], -1)
        return self._warm_build(t, prev, prev_edges)

    def warm_lists(self) -> np.ndarray | None:
        """The k-NN lists of the last build as ``(N, K)`` int64 point ids (``-1`` padded), for a later
        :meth:`build_warm`; ``None`` with a construction other than ``"nn_descent"`` or before any build."""
        if self._n == 0 or self._knn_i is None:
            return None
        return self._point_lists().astype(np.int64)

    def build_warm(self, x: ArrayLike, lists: ArrayLike | None) -> FanngIndex:
        """A fresh build over ``x`` whose NN-descent starts from ``lists`` (the :meth:`warm_lists` of an index over
        the same points before they moved, e.g. restored from a checkpoint), with :meth:`update`'s drift check and
        cold fallback. Unlike :meth:`update` it depends only on ``(x, lists)``, not on this object's history, so a run
        resumed from saved lists repeats the uninterrupted one. ``None``, or a construction other than
        ``"nn_descent"``: a cold :meth:`build`. Wrong-shaped lists or ids out of range raise ``ValueError``."""
        t = check_embeddings(x, "x", min_rows=1)
        prev = check_warm_lists(lists, t)
        if prev is None or self.construction != "nn_descent":
            return self.build(t)
        self._n, self._dim = int(t.shape[0]), int(t.shape[1])
        return self._warm_build(t, prev, None)

    def _warm_build(self, t: torch.Tensor, prev: np.ndarray, prev_edges: np.ndarray | None) -> FanngIndex:
        """Drift check of ``prev`` (per-point ids) under the new points ``t``, then a warm or a cold construction."""
        t0 = time.perf_counter()
        pts = to_numpy_f32(t, "x")
        drift = _list_recall(pts, prev, min(self.knn_k, pts.shape[0] - 1), self.warm_check_points, self.seed)
        check = {"drift_recall": drift, "seconds_drift_check": time.perf_counter() - t0}
        if drift < self.warm_min_recall:
            self._construct(pts, init=None, warm_stats=check)
        else:
            # A true neighbour held anywhere in a previous list ranks among its first knn_k once re-ranked, so the
            # re-ranked lists' recall@knn_k is the drift check's: enough of it, and no join is needed.
            self._construct(pts, init=prev, warm_stats={**check, "warm_start": 1.0}, init_edges=prev_edges,
                            rerank_ok=drift >= self.warm_accept_recall)  # fmt: skip
        return self


def _list_recall(x: np.ndarray, lists: np.ndarray, k: int, n_sample: int, seed: int) -> float:
    """Fraction of the true ``k`` nearest other points that the lists (``(N, L)`` point ids, any ``L``) hold, over
    ``n_sample`` random points; exact search by NumPy matrix products (``n_sample x N``)."""
    n = lists.shape[0]
    rows = np.random.default_rng(seed).choice(n, size=min(n_sample, n), replace=False)
    sq_norms = (x * x).sum(axis=1)
    kk = min(k, n - 1)
    hits = 0
    for lo in range(0, rows.size, 32):  # 32 queries at a time: small blocks, reused, instead of one n_sample x N
        r = rows[lo : lo + 32]
        d = sq_norms[None, :] - 2.0 * (x[r].astype(np.float32) @ x.T)
        d[np.arange(r.size), r] = np.inf  # the point itself
        truth = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        hits += sum(np.intersect1d(t, lst[lst >= 0]).size for t, lst in zip(truth, lists[r], strict=True))
    return hits / float(rows.size * kk)
