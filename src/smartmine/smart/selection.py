"""Algorithm 1 of Smart Mining [SM]: per-anchor triplet selection from sorted neighbour lists.

For every anchor ``a`` with neighbour list ``S_a`` (ascending squared distance, the point itself excluded):

1. the first same-class entry of ``S_a`` is ``x⁺NN``; it sets the exclusion bound ``κ · D²(a, x⁺NN)`` and is never
   used in a triplet. An anchor without any positive in its list gets no mined triplet;
2. other-class entries with ``D² > bound`` are the valid negatives ``N_a`` (ascending); same-class entries after
   ``x⁺NN`` with ``D² >= bound`` are the candidate positives ``P_a`` (ascending);
3. each triplet slot pops the next valid negative (each is used at most once per anchor) and pairs it with the first
   positive of ``P_a`` that is *farther* than the negative (``strict``, the paper), or with ``margin_aware`` the
   first one with ``D(a,p) + m > D(a,n)`` (plain distances). When no listed positive qualifies, the positive is a
   uniformly random same-class point outside ``S_a`` (farther than every listed neighbour for an exact index).

``semihard`` (ours) replaces steps 1-3 by a semi-hard band scaled with κ: each slot draws a positive ``p`` uniformly
from the listed positives (``x⁺NN`` included) and pairs it with the nearest listed negative, unused by the anchor, with
``D²(a,n) > κ · D²(a,p)``. κ = 1 is FaceNet's semi-hard negative, taken over the whole training set; κ < 1 admits
negatives nearer than the positive (harder), κ > 1 easier ones. Since the negative is the first one past the bound,
``D(a,n) / D(a,p) ≈ √κ`` for every mined triplet, so κ sets how much loss a mined triplet carries and the controller
can steer the training error of the mined triplets through it (see :mod:`smartmine.smart.controller`). A slot with no
such negative in the list yields nothing (``num_unfilled_slots``).

Reading fixed here (identical to the paper's walk for ``κ >= 1``): negatives listed *before* ``x⁺NN`` are judged by
the same rule ``D² > κ · D²(a, x⁺NN)``, so a κ floor below 1 admits negatives inside the nearest-positive radius as
ALGORITHMS.md requires; for ``κ >= 1`` they are always inside the bound, i.e. skipped, exactly as in the paper.

Corner cases (documented behaviour, never an error):

* padding entries (index ``-1``, distance ``inf``) and any entry equal to the anchor itself are ignored;
* a point whose class has a single image has no positive, hence no mined triplet (and is never an anchor of a random
  triplet either, see :mod:`smartmine.smart.plan`);
* a slot whose negative has no qualifying listed positive, when every other image of the anchor's class is already
  in ``S_a``, yields nothing (counted in ``num_unfilled_slots``); later slots of that anchor cannot succeed either,
  since their negatives are farther still. Such anchors are filled with random triplets by the plan.

The kernels (entry checks and selection) are compiled with numba and run on chunks of anchors from a thread pool;
the result is fully deterministic and independent of the thread count: its only randomness is one uniform number per
(anchor, slot) drawn beforehand from ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from smartmine._threads import run_chunks
from smartmine._validation import ArrayLike, as_numpy, check_labels, check_positive_int

SELECTION_MODES = ("strict", "margin_aware", "semihard")


@dataclass(frozen=True)
class SelectionResult:
    """What :func:`select_triplets` returns.

    Attributes:
        anchors, positives, negatives: ``(M,)`` int64 dataset indices of the mined triplets, grouped by anchor
            (ascending), slots in order of increasing negative distance.
        num_valid_negatives: ``(N,)`` int64, size of ``N_a`` per anchor (0 when the list has no positive).
        num_mined: ``(N,)`` int64, triplets mined per anchor.
        nearest_positive: ``(N,)`` int64, index of ``x⁺NN`` per anchor, ``-1`` when the list holds no positive.
        num_without_positive: anchors whose list holds no positive (includes single-image classes).
        num_without_negative: anchors with no valid negative (includes those without a positive).
        num_random_positives: mined triplets whose positive is a random same-class point outside ``S_a``.
        num_unfilled_slots: slots that had a valid negative but no positive at all (class fully listed).
        kappa: the κ used.
        selection: ``"strict"``, ``"margin_aware"`` or ``"semihard"``.
    """

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    num_valid_negatives: np.ndarray
    num_mined: np.ndarray
    nearest_positive: np.ndarray
    num_without_positive: int
    num_without_negative: int
    num_random_positives: int
    num_unfilled_slots: int
    kappa: float
    selection: str

    @property
    def has_mined(self) -> np.ndarray:
        """``(N,)`` bool: the anchor has at least one mined triplet."""
        return self.num_mined > 0

    @property
    def num_triplets(self) -> int:
        """Number of mined triplets ``M``."""
        return int(self.anchors.shape[0])

    @property
    def num_anchors_mined(self) -> int:
        """Number of anchors with at least one mined triplet."""
        return int(np.count_nonzero(self.num_mined))

    @property
    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(anchors, positives, negatives)``."""
        return self.anchors, self.positives, self.negatives


@numba.njit(cache=True, nogil=True)
def _select_kernel(
    row0: int,  # dataset index of the chunk's first anchor
    nbr_idx: np.ndarray,  # (R, k) int64, -1 = padding: the lists of anchors row0 .. row0 + R - 1
    nbr_d2: np.ndarray,  # (R, k) float64
    cls: np.ndarray,  # (N,) int64 class id in [0, C)
    cls_start: np.ndarray,  # (C,) int64 start of each class block in `members`
    cls_size: np.ndarray,  # (C,) int64
    members: np.ndarray,  # (N,) int64 dataset indices sorted by class
    rank_in_class: np.ndarray,  # (N,) int64 position of each point inside its class block
    kappa: float,
    slots: int,
    strict: bool,
    margin: float,
    uniforms: np.ndarray,  # (R, slots) float64 in [0, 1)
    out_p: np.ndarray,  # (R, slots) int64, filled here
    out_n: np.ndarray,  # (R, slots) int64, filled here
    num_valid_neg: np.ndarray,  # (R,) int64
    num_mined: np.ndarray,  # (R,) int64
    nearest_pos: np.ndarray,  # (R,) int64
    num_random_pos: np.ndarray,  # (R,) int64
    num_unfilled: np.ndarray,  # (R,) int64
) -> None:
    n_rows, k = nbr_idx.shape
    neg_i = np.empty(k, np.int64)
    neg_d = np.empty(k, np.float64)
    pos_i = np.empty(k, np.int64)
    pos_d = np.empty(k, np.float64)
    excl = np.empty(k + 1, np.int64)
    for row in range(n_rows):
        a = row0 + row  # the anchor (dataset index); row indexes the chunk
        ca = cls[a]
        # x⁺NN: the first listed positive.
        first = -1
        for j in range(k):
            v = nbr_idx[row, j]
            if v >= 0 and v != a and cls[v] == ca:
                first = j
                break
        if first < 0:
            nearest_pos[row] = -1
            continue
        nearest_pos[row] = nbr_idx[row, first]
        bound = kappa * max(nbr_d2[row, first], 0.0)

        n_neg = 0
        n_pos = 0
        n_listed = 0  # same-class entries of the list (for sampling outside it)
        for j in range(k):
            v = nbr_idx[row, j]
            if v < 0 or v == a:
                continue
            d = nbr_d2[row, j]
            if cls[v] == ca:
                excl[n_listed] = rank_in_class[v]
                n_listed += 1
                if j > first and d >= bound:
                    pos_i[n_pos] = v
                    pos_d[n_pos] = d
                    n_pos += 1
            elif d > bound:
                neg_i[n_neg] = v
                neg_d[n_neg] = d
                n_neg += 1
        num_valid_neg[row] = n_neg

        ptr = 0
        made = 0
        outside = -1  # same-class points outside S_a ∪ {a}; computed on first need
        n_excl = 0
        for s in range(min(slots, n_neg)):
            dn = neg_d[s]
            if strict:
                while ptr < n_pos and pos_d[ptr] <= dn:
                    ptr += 1
            else:
                sdn = np.sqrt(max(dn, 0.0))
                while ptr < n_pos and np.sqrt(max(pos_d[ptr], 0.0)) + margin <= sdn:
                    ptr += 1
            if ptr < n_pos:
                p = pos_i[ptr]
            else:
                if outside < 0:
                    excl[n_listed] = rank_in_class[a]
                    ex = np.sort(excl[: n_listed + 1])
                    # De-duplicate in place (an approximate index may list a point twice).
                    n_excl = 0
                    for t in range(ex.shape[0]):
                        if n_excl == 0 or ex[t] != excl[n_excl - 1]:
                            excl[n_excl] = ex[t]
                            n_excl += 1
                    outside = cls_size[ca] - n_excl
                if outside <= 0:
                    # Every image of the class is listed: no positive for this or any farther negative.
                    num_unfilled[row] = min(slots, n_neg) - s
                    break
                r = min(int(uniforms[row, s] * outside), outside - 1)
                # r-th class position not in the sorted excluded set.
                pos = r
                for t in range(n_excl):
                    if excl[t] <= pos:
                        pos += 1
                    else:
                        break
                p = members[cls_start[ca] + pos]
                num_random_pos[row] += 1
            out_p[row, made] = p
            out_n[row, made] = neg_i[s]
            made += 1
        num_mined[row] = made


@numba.njit(cache=True, nogil=True)
def _select_semihard_kernel(
    row0: int,  # dataset index of the chunk's first anchor
    nbr_idx: np.ndarray,  # (R, k) int64, -1 = padding
    nbr_d2: np.ndarray,  # (R, k) float64
    cls: np.ndarray,  # (N,) int64 class id
    kappa: float,
    slots: int,
    uniforms: np.ndarray,  # (R, slots) float64 in [0, 1)
    out_p: np.ndarray,  # (R, slots) int64, filled here
    out_n: np.ndarray,  # (R, slots) int64, filled here
    num_valid_neg: np.ndarray,  # (R,) int64: negatives past the bound of the first slot's positive
    num_mined: np.ndarray,  # (R,) int64
    nearest_pos: np.ndarray,  # (R,) int64
    num_unfilled: np.ndarray,  # (R,) int64
) -> None:
    n_rows, k = nbr_idx.shape
    neg_i = np.empty(k, np.int64)
    neg_d = np.empty(k, np.float64)
    used = np.zeros(k, np.bool_)
    pos_i = np.empty(k, np.int64)
    pos_d = np.empty(k, np.float64)
    for row in range(n_rows):
        a = row0 + row
        ca = cls[a]
        n_neg = 0
        n_pos = 0
        for j in range(k):
            v = nbr_idx[row, j]
            if v < 0 or v == a:
                continue
            if cls[v] == ca:
                pos_i[n_pos] = v
                pos_d[n_pos] = max(nbr_d2[row, j], 0.0)
                n_pos += 1
            else:
                neg_i[n_neg] = v
                neg_d[n_neg] = nbr_d2[row, j]
                used[n_neg] = False
                n_neg += 1
        if n_pos == 0:
            nearest_pos[row] = -1
            continue
        nearest_pos[row] = pos_i[0]
        made = 0
        for s in range(slots):
            q = min(int(uniforms[row, s] * n_pos), n_pos - 1)
            bound = kappa * pos_d[q]
            # First unused negative past the bound (the list is ascending, so the first is the nearest).
            lo = 0
            hi = n_neg
            while lo < hi:
                mid = (lo + hi) // 2
                if neg_d[mid] > bound:
                    hi = mid
                else:
                    lo = mid + 1
            if s == 0:
                num_valid_neg[row] = n_neg - lo
            while lo < n_neg and used[lo]:
                lo += 1
            if lo >= n_neg:
                num_unfilled[row] += 1
                continue
            used[lo] = True
            out_p[row, made] = pos_i[q]
            out_n[row, made] = neg_i[lo]
            made += 1
        num_mined[row] = made


def _check_neighbour_lists(neighbour_indices: ArrayLike, neighbour_sq_distances: ArrayLike) -> tuple[np.ndarray, ...]:
    """Shapes and dtypes of the lists (cheap); the per-entry checks run chunk by chunk in :func:`_scan_kernel`."""
    idx = as_numpy(neighbour_indices)
    d2 = as_numpy(neighbour_sq_distances)
    if idx.ndim != 2:
        raise ValueError(f"neighbour_indices: expected a 2-D (N, k) array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"neighbour_indices: expected an integer dtype, got {idx.dtype}")
    if d2.shape != idx.shape:
        raise ValueError(f"neighbour_sq_distances: shape {d2.shape} does not match neighbour_indices shape {idx.shape}")
    if not np.issubdtype(d2.dtype, np.floating):
        raise ValueError(f"neighbour_sq_distances: expected a floating-point dtype, got {d2.dtype}")
    return idx, d2


# Problems the scan reports, first found per chunk (row order).
_OK, _OUT_OF_RANGE, _NAN, _UNSORTED = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def _scan_kernel(nbr_idx: np.ndarray, nbr_d2: np.ndarray, n: int) -> tuple[int, int, int, int]:
    """Entry checks of one chunk of lists: indices in ``[-1, n)``, no NaN distance on a non-padding entry, each row
    ascending with padding counted as +inf. Returns ``(problem, row, min index, max index)``, ``row`` local to the
    chunk (-1 when fine); the index range covers the whole chunk only when it is ``_OK`` or ``_OUT_OF_RANGE``."""
    rows, k = nbr_idx.shape  # both > 0
    lo = nbr_idx[0, 0]
    hi = lo
    bad_row = -1
    for r in range(rows):
        prev = -np.inf
        for j in range(k):
            v = nbr_idx[r, j]
            lo = min(lo, v)
            hi = max(hi, v)
            if v < -1 or v >= n:
                if bad_row < 0:
                    bad_row = r
                continue
            if bad_row >= 0:
                continue
            d = np.inf if v < 0 else nbr_d2[r, j]
            if np.isnan(d):
                return _NAN, r, lo, hi
            if d < prev:
                return _UNSORTED, r, lo, hi
            prev = d
    if bad_row >= 0:
        return _OUT_OF_RANGE, bad_row, lo, hi
    return _OK, -1, lo, hi


def class_layout(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group points by class for O(1) class-restricted sampling.

    Args:
        labels: ``(N,)`` integer labels (any values).

    Returns:
        ``(cls, cls_start, cls_size, members, rank_in_class)``: ``cls`` (N,) dense class ids in ``[0, C)``;
        ``members`` (N,) dataset indices grouped by class (ascending index inside a class); ``cls_start`` /
        ``cls_size`` (C,) the block of each class in ``members``; ``rank_in_class`` (N,) the position of each point
        inside its block.
    """
    _, cls = np.unique(labels, return_inverse=True)
    cls = cls.astype(np.int64).reshape(-1)
    members = np.argsort(cls, kind="stable").astype(np.int64)
    cls_size = np.bincount(cls).astype(np.int64) if cls.size else np.zeros(0, np.int64)
    cls_start = np.zeros_like(cls_size)
    if cls_size.size:
        cls_start[1:] = np.cumsum(cls_size)[:-1]
    rank_in_class = np.empty_like(cls)
    rank_in_class[members] = np.arange(cls.size, dtype=np.int64) - cls_start[cls[members]]
    return cls, cls_start, cls_size, members, rank_in_class


def outside_block(r: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Map positions ``r`` in ``[0, N − size)`` onto ``members`` positions outside the class block
    ``[start, start + size)`` (of :func:`class_layout`): uniform ``r`` gives a uniform point of another class."""
    return np.where(r < start, r, r + size)


_CHUNK_ROWS = 16_384  # anchors per work item: small enough to balance threads, large enough to amortise a call


def _raise_first_problem(bounds: list[tuple[int, int]], results: list[tuple[int, int, int, int]], n: int) -> None:
    """The clear error of the first bad row, if any chunk (``bounds[c]``, scan result ``results[c]``) found one."""
    for (lo, _), (code, row, _, _) in zip(bounds, results, strict=True):
        if code == _OUT_OF_RANGE:
            # Index range over the chunks that scanned to the end (the others stopped early).
            whole = [(r[2], r[3]) for r in results if r[0] in (_OK, _OUT_OF_RANGE)]
            raise ValueError(
                f"neighbour_indices: entries must lie in [-1, {n}) (-1 = padding), got "
                f"[{min(w[0] for w in whole)}, {max(w[1] for w in whole)}] (first bad row: {lo + row})"
            )
        if code == _NAN:
            raise ValueError(f"neighbour_sq_distances: contains NaN for a non-padding entry (row {lo + row})")
        if code == _UNSORTED:
            raise ValueError(
                f"neighbour_sq_distances: each row must be sorted ascending (padding last), row {lo + row} is not"
            )


def select_triplets(
    neighbour_indices: ArrayLike,
    neighbour_sq_distances: ArrayLike,
    labels: ArrayLike,
    kappa: float,
    rng: np.random.Generator,
    *,
    triplets_per_anchor: int = 1,
    selection: str = "strict",
    margin: float = 0.2,
    n_threads: int | None = None,
) -> SelectionResult:
    """Algorithm 1 of [SM]: mine up to ``triplets_per_anchor`` triplets per anchor from its neighbour list.

    Args:
        neighbour_indices: ``(N, k)`` int dataset indices of each point's neighbours, ascending by distance, the point
            itself excluded (a stray self entry is ignored); ``-1`` marks padding.
        neighbour_sq_distances: ``(N, k)`` float squared distances matching ``neighbour_indices`` (padding: ``inf``).
        labels: ``(N,)`` integer class labels.
        kappa: exclusion factor κ > 0 of Eq. 6 (a negative is valid iff ``D²(a,n) > κ · D²(a, x⁺NN)``).
        rng: source of the (only) randomness: the choice of positives outside the list.
        triplets_per_anchor: slots per anchor (default 1).
        selection: ``"strict"`` (default, the paper: ``D(a,p) > D(a,n)``), ``"margin_aware"``
            (``D(a,p) + margin > D(a,n)``, plain distances, keeps mining alive once classes separate) or
            ``"semihard"`` (random listed positive, nearest negative with ``D²(a,n) > κ · D²(a,p)``; module docstring).
        margin: ``m`` of the margin-aware rule (default 0.2); unused in strict mode.
        n_threads: threads over anchor chunks (default ``numba.get_num_threads()``); the result does not depend on it
            (every anchor's random numbers are drawn before the split).

    Returns:
        A :class:`SelectionResult`. Anchors without a valid negative are reported, not filled.
    """
    idx, d2 = _check_neighbour_lists(neighbour_indices, neighbour_sq_distances)
    n = idx.shape[0]
    lab = check_labels(labels, n).numpy()
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    kappa = float(kappa)
    if not np.isfinite(kappa) or kappa <= 0:
        raise ValueError(f"kappa: expected a finite value > 0, got {kappa}")
    slots = check_positive_int(triplets_per_anchor, "triplets_per_anchor")
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection: expected one of {SELECTION_MODES}, got {selection!r}")
    margin = float(margin)
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin: expected a finite value >= 0, got {margin}")
    if n_threads is not None:
        check_positive_int(n_threads, "n_threads")

    cls, cls_start, cls_size, members, rank_in_class = class_layout(lab)
    uniforms = rng.random((n, slots))
    out_p = np.full((n, slots), -1, np.int64)
    out_n = np.full((n, slots), -1, np.int64)
    num_valid_neg = np.zeros(n, np.int64)
    num_mined = np.zeros(n, np.int64)
    nearest_pos = np.full(n, -1, np.int64)
    num_random_pos = np.zeros(n, np.int64)
    num_unfilled = np.zeros(n, np.int64)
    strict = selection == "strict"
    semihard = selection == "semihard"

    def work(lo: int, hi: int) -> tuple[int, int, int, int]:
        # Checked and converted chunk by chunk (memory: one chunk of float64 copies, not the whole (N, k) lists);
        # a chunk is selected only once its entries are known to be safe for the kernel.
        ci = np.ascontiguousarray(idx[lo:hi], dtype=np.int64)
        cd = np.ascontiguousarray(d2[lo:hi], dtype=np.float64)
        found = _scan_kernel(ci, cd, n)
        if found[0] == _OK and semihard:
            _select_semihard_kernel(
                lo, ci, cd, cls, kappa, slots, uniforms[lo:hi], out_p[lo:hi], out_n[lo:hi], num_valid_neg[lo:hi],
                num_mined[lo:hi], nearest_pos[lo:hi], num_unfilled[lo:hi],
            )  # fmt: skip
        elif found[0] == _OK:
            _select_kernel(
                lo, ci, cd, cls, cls_start, cls_size, members, rank_in_class, kappa, slots, strict, margin,
                uniforms[lo:hi], out_p[lo:hi], out_n[lo:hi], num_valid_neg[lo:hi], num_mined[lo:hi],
                nearest_pos[lo:hi], num_random_pos[lo:hi], num_unfilled[lo:hi],
            )  # fmt: skip
        return found

    if n and idx.shape[1]:
        bounds = [(lo, min(n, lo + _CHUNK_ROWS)) for lo in range(0, n, _CHUNK_ROWS)]
        threads = numba.get_num_threads() if n_threads is None else n_threads
        _raise_first_problem(bounds, run_chunks(work, bounds, threads), n)
    filled = np.arange(slots)[None, :] < num_mined[:, None]
    anchors = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, slots))[filled]
    return SelectionResult(
        anchors=np.ascontiguousarray(anchors),
        positives=out_p[filled],
        negatives=out_n[filled],
        num_valid_negatives=num_valid_neg,
        num_mined=num_mined,
        nearest_positive=nearest_pos,
        num_without_positive=int(np.count_nonzero(nearest_pos < 0)),
        num_without_negative=int(np.count_nonzero(num_valid_neg == 0)),
        num_random_positives=int(num_random_pos.sum()),
        num_unfilled_slots=int(num_unfilled.sum()),
        kappa=kappa,
        selection=selection,
    )
