"""SmartMiner end to end on clustered synthetic data, warm-up, κ handling, resume, bad input; EmbeddingCache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartmine.index.base import NeighbourIndex
from smartmine.smart.controller import AdaptiveKappa
from smartmine.smart.miner import EmbeddingCache, SmartMiner, default_k


class BruteForceIndex(NeighbourIndex):
    """NumPy brute force (the reference for these tests); counts how often it is built."""

    builds = 0

    def _build(self, x: torch.Tensor) -> None:
        BruteForceIndex.builds += 1
        self._x = x.detach().cpu().double().numpy()

    def _search(self, queries, k):
        q = queries.detach().cpu().double().numpy()
        d2 = ((q[:, None, :] - self._x[None]) ** 2).sum(-1)
        idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d2, idx, 1).astype(np.float32), idx.astype(np.int64)

    def _neighbours(self, k):
        d2 = ((self._x[:, None, :] - self._x[None]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d2, idx, 1).astype(np.float32), idx.astype(np.int64)


def clustered(n_classes=8, per_class=20, dim=8, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def dist(x, i, j):
    return np.linalg.norm(x[i].astype(np.float64) - x[j], axis=1)


def test_strict_mined_triplets_violate_the_order_and_are_valid():
    x, y = clustered()
    miner = SmartMiner(index_factory=BruteForceIndex, adaptive=False, kappa=1.0, warmup_epochs=0,
                       mined_fraction=1.0, triplets_per_anchor=2)  # fmt: skip
    plan, stats = miner.plan_epoch(x, y, 0)
    assert len(plan) == 160 and stats["kappa"] == 1.0 and stats["k"] == 64  # max(64, 2 * 20) capped at 159
    m = plan.is_mined
    assert m.sum() > 80 and stats["mined_triplets"] == m.sum()
    assert (dist(x, plan.a[m], plan.n[m]) < dist(x, plan.a[m], plan.p[m])).all()
    assert (y[plan.a] == y[plan.p]).all() and (y[plan.a] != y[plan.n]).all()
    assert stats["random_triplets"] + stats["mined_triplets"] == 160
    assert stats["shortfall"] == 160 - m.sum()
    assert stats["anchors_with_negatives"] >= stats["anchors_mined"] > 0
    for key in ("index_seconds", "search_seconds", "selection_seconds"):
        assert stats[key] >= 0.0


def test_margin_aware_triplets_carry_margin_loss():
    x, y = clustered(spread=0.3, seed=1)
    miner = SmartMiner(index_factory=BruteForceIndex, adaptive=False, kappa=1.0, warmup_epochs=0,
                       mined_fraction=1.0, selection="margin_aware", margin=0.2)  # fmt: skip
    plan, _ = miner.plan_epoch(x, y, 0)
    m = plan.is_mined
    assert m.sum() > 0
    assert (dist(x, plan.a[m], plan.n[m]) < dist(x, plan.a[m], plan.p[m]) + 0.2).all()


def test_mined_fraction_is_applied():
    x, y = clustered(spread=1.0)
    miner = SmartMiner(index_factory=BruteForceIndex, warmup_epochs=0, mined_fraction=0.25, triplets_per_epoch=80,
                       kappa_controller=AdaptiveKappa(kappa0=1.0))  # fmt: skip
    plan, stats = miner.plan_epoch(x, y, 0)
    assert len(plan) == 80 and stats["mined_triplets"] == 20 and stats["shortfall"] == 0


def test_warmup_epochs_are_random_and_build_no_index():
    x, y = clustered()
    BruteForceIndex.builds = 0
    miner = SmartMiner(index_factory=BruteForceIndex, warmup_epochs=2)
    for epoch in (0, 1):
        plan, stats = miner.plan_epoch(None, y, epoch)
        assert stats["warmup"] and stats["kappa"] is None and not plan.is_mined.any() and len(plan) == 160
        assert stats["index"] is None
        assert miner.update_error(0.3) == 16.0  # a warm-up error does not reach the controller
    assert BruteForceIndex.builds == 0 and miner.controller.history == []
    plan, stats = miner.plan_epoch(torch.from_numpy(x), y, 2)  # torch embeddings are accepted
    assert BruteForceIndex.builds == 1 and not stats["warmup"] and stats["kappa"] == 16.0
    assert miner.update_error(0.3) == 8.0  # now forwarded: e < target halves κ
    assert miner.kappa == 8.0
    with pytest.raises(ValueError, match="embeddings"):
        miner.plan_epoch(None, y, 3)


def test_fixed_kappa_ignores_errors():
    x, y = clustered()
    miner = SmartMiner(index_factory=BruteForceIndex, adaptive=False, kappa=3.0, warmup_epochs=0)
    _, stats = miner.plan_epoch(x, y, 0)
    assert stats["kappa"] == 3.0 and miner.update_error(0.9) == 3.0


def test_plans_are_deterministic_and_resume_exactly():
    x, y = clustered(spread=1.0)

    def make():
        return SmartMiner(index_factory=BruteForceIndex, warmup_epochs=1, seed=5)

    a = make()
    for epoch in range(3):
        a.plan_epoch(x, y, epoch)
        a.update_error([0.3, 0.7, 0.6][epoch])
    b = make()
    b.load_state_dict(a.state_dict())
    pa, sa = a.plan_epoch(x, y, 3)
    pb, sb = b.plan_epoch(x, y, 3)
    assert sa["kappa"] == sb["kappa"]
    assert np.array_equal(pa.a, pb.a) and np.array_equal(pa.p, pb.p) and np.array_equal(pa.n, pb.n)
    assert a.update_error(0.4) == b.update_error(0.4)


def test_default_index_is_exact_and_agrees_with_brute_force():
    x, y = clustered(n_classes=5, per_class=12)
    kw = dict(adaptive=False, kappa=1.0, warmup_epochs=0, mined_fraction=1.0)
    p1, s1 = SmartMiner(**kw).plan_epoch(x, y, 0)
    p2, s2 = SmartMiner(index_factory=BruteForceIndex, **kw).plan_epoch(x, y, 0)
    assert s1["k"] == 59  # default k capped at N - 1
    assert s1["index"] == "exact" and s2["index"] == "index"  # the backend's name (the base class's for a custom one)
    assert np.array_equal(p1.a, p2.a) and np.array_equal(p1.n, p2.n) and np.array_equal(p1.p, p2.p)


def test_singleton_class_is_never_an_anchor_and_k_is_capped():
    x, y = clustered(n_classes=4, per_class=6)
    y = y.copy()
    y[0] = 99  # a class with one image
    miner = SmartMiner(index_factory=BruteForceIndex, k=500, warmup_epochs=0, mined_fraction=0.5,
                       kappa_controller=AdaptiveKappa(kappa0=1.0))  # fmt: skip
    plan, stats = miner.plan_epoch(x, y, 0)
    assert stats["k"] == 23 and 0 not in plan.a


def test_bad_input():
    x, y = clustered(n_classes=3, per_class=5)
    miner = SmartMiner(index_factory=BruteForceIndex, warmup_epochs=0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        miner.plan_epoch(bad, y, 0)
    with pytest.raises(ValueError, match="one class"):
        miner.plan_epoch(x, np.zeros_like(y), 0)
    with pytest.raises(ValueError, match="at least 2"):
        miner.plan_epoch(x[:1], y[:1], 0)
    with pytest.raises(ValueError, match="rows"):
        miner.plan_epoch(x[:10], y, 0)
    with pytest.raises(ValueError, match="two or more"):
        miner.plan_epoch(x, np.arange(15), 0)
    with pytest.raises(ValueError, match="error"):
        miner.update_error(float("nan"))
    with pytest.raises(ValueError, match="selection"):
        SmartMiner(selection="soft")
    with pytest.raises(ValueError, match="mined_fraction"):
        SmartMiner(mined_fraction=-0.1)
    assert default_k(np.repeat(np.arange(3), 40)) == 80 and default_k(np.arange(10) % 2) == 9


def test_embedding_cache():
    cache = EmbeddingCache(5, 3)
    assert not cache.complete() and cache.missing().tolist() == [0, 1, 2, 3, 4]
    cache.update(np.array([0, 1, 2]), torch.ones(3, 3))
    cache.update(torch.tensor([3, 4, 3]), np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32))
    assert cache.complete()
    got = cache.get()
    assert np.array_equal(got[3], [7, 8, 9]) and np.array_equal(got[4], [4, 5, 6]) and got.dtype == np.float32
    cache.new_epoch()
    cache.update([0], torch.zeros(1, 3))
    assert cache.complete(max_age=1) and cache.missing(max_age=0).tolist() == [1, 2, 3, 4]
    cache.new_epoch()
    assert cache.missing(max_age=1).tolist() == [1, 2, 3, 4]  # two epochs old now
    with pytest.raises(ValueError, match="older"):
        cache.get()
    with pytest.raises(ValueError, match="indices"):
        cache.update([5], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="shape"):
        cache.update([1], torch.zeros(1, 4))
    with pytest.raises(ValueError, match="NaN"):
        cache.update([1], torch.full((1, 3), float("nan")))


# ------------------------------------------------------------------------------------------- steered controller
def test_steered_auto_kappa_fills_the_plan_and_reports_thresholds():
    from smartmine.smart.controller import SteeredKappa
    from smartmine.smart.thresholds import kappa_for_share, kappa_thresholds

    x, y = clustered(spread=0.9)
    steer = SteeredKappa(kappa0=None, kappa_min=0.1, cautious_start=False)
    miner = SmartMiner(index_factory=BruteForceIndex, kappa_controller=steer,
                       warmup_epochs=0, mined_fraction=0.5, selection="semihard")  # fmt: skip
    assert miner.kappa is None  # auto: unresolved until the first lists are seen
    plan, stats = miner.plan_epoch(x, y, 0)
    # Re-derive the cap from the same lists: the largest κ leaving 1.1 × the planned share of anchors mineable.
    ref = BruteForceIndex()
    ref.build(x)
    d2, nbr = ref.neighbours(stats["k"])
    th = kappa_thresholds(nbr, d2, y, "semihard")
    cap = kappa_for_share(th, 1.1 * 80 / 160)
    assert stats["kappa"] == pytest.approx(cap) and stats["kappa_cap"] == pytest.approx(cap)
    assert stats["mined_planned"] == 80
    assert stats["mined_triplets"] >= 0.8 * 80  # the plan (almost) fills at the auto κ
    assert stats["t_q10"] <= stats["t_q50"] <= stats["t_q90"]
    assert stats["list_recall"] == pytest.approx(1.0)  # brute-force lists are exact


def test_cautious_auto_start_mines_the_plan_floor_at_its_easier_kappa():
    from smartmine.smart.controller import SteeredKappa
    from smartmine.smart.thresholds import kappa_for_share, kappa_thresholds

    x, y = clustered(spread=0.9)
    steer = SteeredKappa(kappa0=None, kappa_min=0.1, min_share_scale=0.25)  # cautious_start is the default
    miner = SmartMiner(index_factory=BruteForceIndex, kappa_controller=steer,
                       warmup_epochs=0, mined_fraction=0.5, selection="semihard")  # fmt: skip
    plan, stats = miner.plan_epoch(x, y, 0)
    ref = BruteForceIndex()
    ref.build(x)
    d2, nbr = ref.neighbours(stats["k"])
    th = kappa_thresholds(nbr, d2, y, "semihard")
    need = 1.1 * 80 / 160  # the share of anchors the whole plan needs (10 % spare)
    floor, cap = kappa_for_share(th, 0.25 * need), kappa_for_share(th, need)
    assert floor > cap  # the floor's plan admits easier triplets
    assert stats["kappa"] == pytest.approx(floor) and stats["kappa_cap"] == pytest.approx(cap)
    assert stats["mined_fraction"] == pytest.approx(0.5 * 0.25) and stats["mined_planned"] == 20
    assert stats["mined_triplets"] >= 0.8 * 20
    assert int(plan.is_mined.sum()) == stats["mined_triplets"]


def test_steered_kappa_above_the_cap_plans_fewer_mined_triplets():
    # The controller asks for a κ above the cap (its error stayed above the target there): the epoch plans only what
    # that κ can fill, re-derived from the same lists, and the rest of the epoch is random.
    from smartmine.smart.controller import SteeredKappa
    from smartmine.smart.thresholds import kappa_for_share, kappa_thresholds

    x, y = clustered(spread=0.9)
    ref = BruteForceIndex()
    ref.build(x)
    d2, nbr = ref.neighbours(64)
    th = kappa_thresholds(nbr, d2, y, "semihard")
    need = 1.1 * 80 / 160
    kappa = float(th.quantiles((0.8,))[0])  # leaves about 20 % of anchors mineable, against 55 % needed
    assert kappa > kappa_for_share(th, need)
    miner = SmartMiner(index_factory=BruteForceIndex, k=64, kappa_controller=SteeredKappa(kappa0=kappa, kappa_min=0.1),
                       warmup_epochs=0, mined_fraction=0.5, selection="semihard", list_recall_sample=0)  # fmt: skip
    plan, stats = miner.plan_epoch(x, y, 0)
    scale = th.share_above(kappa) / need
    assert 0.25 < scale < 1.0 and stats["kappa"] == kappa
    assert stats["mined_fraction"] == pytest.approx(0.5 * scale)
    assert stats["mined_planned"] == round(0.5 * scale * 160) < 80
    assert stats["mined_triplets"] + stats["random_triplets"] == 160
    assert stats["mined_triplets"] >= 0.8 * stats["mined_planned"]  # the smaller plan fills


def test_steered_epoch_that_mines_nothing_still_moves_the_controller():
    # k = 1 and every nearest neighbour of another class: no list holds a positive, nothing can be mined.
    from smartmine.smart.controller import SteeredKappa, training_error

    x = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1], [0.05, 3.0], [5.05, 3.0]], np.float32)
    y = np.array([0, 1, 0, 1, 0, 1])
    miner = SmartMiner(index_factory=BruteForceIndex, k=1, kappa_controller=SteeredKappa(kappa0=4, kappa_min=0.5),
                       warmup_epochs=0, mined_fraction=0.5, selection="semihard", list_recall_sample=0)  # fmt: skip
    plan, stats = miner.plan_epoch(x, y, 0)
    assert stats["mined_triplets"] == 0 and stats["mined_planned"] == 3 and stats["kappa"] == 0.5  # cap 0: floor
    # error_counts: mined counts nothing; the trainer then reports None, as training_error does.
    assert training_error(torch.ones(len(plan)), plan.is_mined, count="mined") is None
    miner.controller._kappa = 4.0  # pretend the controller stood higher: a zero-mined epoch must lower it
    assert miner.update_error(None) == 2.0
    rec = miner.controller.history[-1]
    assert rec.rule == "shortfall" and not rec.in_fit and rec.fill == 0.0


def test_steered_state_round_trip_resumes_identically():
    from smartmine.smart.controller import SteeredKappa

    x, y = clustered(spread=0.9)

    def make():
        return SmartMiner(index_factory=BruteForceIndex, kappa_controller=SteeredKappa(kappa0=None),
                          warmup_epochs=0, selection="semihard", seed=5)  # fmt: skip

    a = make()
    a.plan_epoch(x, y, 0)
    a.update_error(0.7)
    b = make()
    b.load_state_dict(a.state_dict())
    pa, sa = a.plan_epoch(x, y, 1)
    pb, sb = b.plan_epoch(x, y, 1)
    assert sa["kappa"] == sb["kappa"]
    np.testing.assert_array_equal(np.stack([pa.a, pa.p, pa.n]), np.stack([pb.a, pb.p, pb.n]))
    assert a.update_error(0.4) == b.update_error(0.4)


def test_warm_started_mining_resumes_exactly_from_state():
    # FANNG warm-starts each mined epoch from the last one's lists; the lists travel in the state, so a miner restored
    # after epoch 1 plans epoch 2 exactly as the uninterrupted one (same κ, same triplets, same lists).
    from smartmine.index.fanng import FanngIndex
    from smartmine.smart.controller import SteeredKappa

    x, y = clustered(n_classes=10, per_class=30, dim=8, spread=0.9)
    rng = np.random.default_rng(1)
    drift = [x + 0.02 * e * rng.normal(size=x.shape).astype(np.float32) for e in range(3)]

    def make(warm=True):
        return SmartMiner(index_factory=lambda: FanngIndex(seed=3, knn_k=16), k=40, warm_start=warm,
                          kappa_controller=SteeredKappa(kappa0=None), warmup_epochs=0, selection="semihard",
                          seed=5)  # fmt: skip

    a = make()
    _, s0 = a.plan_epoch(drift[0], y, 0)
    assert s0["warm_start"] == 0.0 and s0["drift_recall"] is None and s0["warm_joined"] is None  # nothing yet
    a.update_error(0.6)
    _, s1 = a.plan_epoch(drift[1], y, 1)
    assert s1["warm_start"] == 1.0 and s1["drift_recall"] > 0.5
    assert s1["warm_joined"] == 1.0  # no warm_reserve: the stale lists are joined, never only re-ranked
    a.update_error(0.55)
    state = a.state_dict()
    assert tuple(state["warm_lists"].shape) == (300, 40) and state["warm_lists"].dtype == torch.int32
    b = make()
    b.load_state_dict(state)
    pa, sa = a.plan_epoch(drift[2], y, 2)
    pb, sb = b.plan_epoch(drift[2], y, 2)
    assert sa["kappa"] == sb["kappa"] and sa["warm_start"] == sb["warm_start"] == 1.0
    np.testing.assert_array_equal(np.stack([pa.a, pa.p, pa.n]), np.stack([pb.a, pb.p, pb.n]))
    assert sa["list_recall"] >= 0.95  # warm lists are as good as cold ones here
    # Off: every epoch builds cold and nothing is kept.
    c = make(warm=False)
    c.plan_epoch(drift[0], y, 0)
    c.update_error(0.6)
    _, sc = c.plan_epoch(drift[1], y, 1)
    assert sc["warm_start"] == 0.0 and c.state_dict()["warm_lists"] is None


class _ShuffledListsIndex(BruteForceIndex):
    """Exact distances to the wrong points: every list is a fixed random permutation of other points."""

    def _neighbours(self, k):
        d2, idx = super()._neighbours(self._n - 1)
        rng = np.random.default_rng(0)
        cols = np.stack([rng.permutation(self._n - 1)[:k] for _ in range(self._n)])
        pick = np.take_along_axis(idx, cols, axis=1)
        dist = np.take_along_axis(d2, cols, axis=1)
        order = np.argsort(dist, axis=1)
        return np.take_along_axis(dist, order, axis=1), np.take_along_axis(pick, order, axis=1)


class _ShuffledNNDescent(_ShuffledListsIndex):
    construction = "nn_descent"


@pytest.mark.parametrize(("index_cls", "remedy"), [(_ShuffledListsIndex, "use mining.index=exact"),
                                                   (_ShuffledNNDescent, "mining.index_options.knn_iters")])
def test_poor_neighbour_lists_warn_and_name_the_option_that_governs_them(index_cls, remedy):
    x, y = clustered(spread=0.9)
    miner = SmartMiner(index_factory=index_cls, k=16, adaptive=False, kappa=1.0, warmup_epochs=0,
                       selection="semihard", list_recall_sample=64)  # fmt: skip
    with pytest.warns(UserWarning, match="recall") as caught:
        _, stats = miner.plan_epoch(x, y, 0)
    assert stats["list_recall"] < 0.5  # 16 random points out of 159 hold about 10 % of the true 16 nearest
    assert remedy in str(caught[0].message)
    exact = SmartMiner(index_factory=BruteForceIndex, k=16, adaptive=False, kappa=1.0, warmup_epochs=0,
                       selection="semihard", list_recall_sample=64)  # fmt: skip
    _, stats = exact.plan_epoch(x, y, 0)
    assert stats["list_recall"] == pytest.approx(1.0)


def test_fanng_lists_are_built_at_the_mining_length_unless_the_user_fixed_it():
    # knn_k below k would build short lists and extend them with a second NN-descent pass; the miner raises it to k
    # before the build (never lowers it), and leaves it alone when told the user set it.
    from smartmine.index.fanng import FanngIndex
    from smartmine.training.builders import build_smart_miner
    from smartmine.training.config import config_from_dict

    x, y = clustered(n_classes=10, per_class=30, dim=8, spread=0.9)
    for match, knn_k, expected in ((True, 8, 40), (False, 8, 8), (True, 64, 64)):
        made = []

        def factory(knn_k=knn_k, made=made):
            made.append(FanngIndex(seed=0, knn_k=knn_k))
            return made[-1]

        miner = SmartMiner(index_factory=factory, k=40, adaptive=False, kappa=1.0, warmup_epochs=0,
                           selection="semihard", match_list_length=match)  # fmt: skip
        _, stats = miner.plan_epoch(x, y, 0)
        assert made[0].knn_k == expected and stats["list_recall"] >= 0.9 and stats["index"] == "fanng"
    base = {"mining": {"strategy": "smart", "index": "fanng"}}
    assert build_smart_miner(config_from_dict(base), torch.device("cpu")).match_list_length
    base["mining"]["index_options"] = {"knn_k": 16}
    assert not build_smart_miner(config_from_dict(base), torch.device("cpu")).match_list_length
