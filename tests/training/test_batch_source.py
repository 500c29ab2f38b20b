"""Batch sources on tensors: a fake loader (no images) and a fake ``embed_train`` (fixed embeddings), no model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartmine.index.exact import ExactIndex
from smartmine.smart import AdaptiveKappa, EmbeddingCache, SmartMiner, TripletBatch
from smartmine.smart.graph_batches import neighbour_confusion
from smartmine.training.batch_source import GraphBatchSource, InBatchSource
from smartmine.training.runtime import epoch_seed
from smartmine.training.smart_source import SmartTripletSource
from smartmine.training.trainer import EpochStats

LABELS = np.repeat(np.arange(4), 4)  # 4 classes × 4 images, rows 0..15


def fake_loader(labels: np.ndarray):
    """A DataLoader stand-in: the "image" of row i is the number i."""

    def loader(batch_sampler):
        for idx in batch_sampler:
            idx = torch.as_tensor(list(idx), dtype=torch.int64)
            yield idx.float()[:, None], torch.from_numpy(labels[idx.numpy()]), idx

    return loader


class FakeEmbed:
    """``embed_train`` returning fixed rows of ``table`` and recording what was asked for."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.calls: list[np.ndarray | None] = []

    def __call__(self, indices):
        self.calls.append(None if indices is None else np.asarray(indices).copy())
        return self.table.clone() if indices is None else self.table[torch.as_tensor(np.asarray(indices))]


class SeedRecordingMiner:
    """A miner factory that records the seeds it is built with; the miner returns the first triplet of the batch."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, seed: int):
        self.seeds.append(seed)

        def mine(emb, labels):
            lab = labels.tolist()
            a = 0
            p = next(i for i in range(1, len(lab)) if lab[i] == lab[0])
            n = next(i for i in range(len(lab)) if lab[i] != lab[0])
            return torch.tensor([a]), torch.tensor([p]), torch.tensor([n])

        return mine


# --------------------------------------------------------------------------------------------- in-batch P×K
def test_in_batch_source_gives_pk_batches_and_seeds_its_miner_per_epoch():
    miners = SeedRecordingMiner()
    src = InBatchSource(LABELS, fake_loader(LABELS), miners, classes_per_batch=2, samples_per_class=2, seed=5)
    assert src.start_epoch(3, FakeEmbed(np.zeros((16, 2)))) == {}
    assert miners.seeds == [epoch_seed(5, 3)]
    batches = list(src)
    assert len(batches) == len(src) == 4  # 16 images / (2 × 2)
    seen = []
    for b in batches:
        classes, counts = np.unique(b.labels.numpy(), return_counts=True)
        assert len(classes) == 2 and counts.tolist() == [2, 2]
        np.testing.assert_array_equal(b.labels.numpy(), LABELS[b.indices.numpy()])
        assert b.counted is None
        a, p, n = b.mine(torch.zeros(4, 2), b.labels)
        assert b.labels[a] == b.labels[p] and b.labels[a] != b.labels[n]
        seen += b.indices.tolist()
    assert sorted(seen) == list(range(16))  # every image once per epoch


def test_in_batch_source_is_a_function_of_seed_and_epoch():
    def epoch_indices(seed, epoch):
        src = InBatchSource(LABELS, fake_loader(LABELS), SeedRecordingMiner(), classes_per_batch=2,
                            samples_per_class=2, seed=seed)
        src.start_epoch(epoch, FakeEmbed(np.zeros((16, 2))))
        return [b.indices.tolist() for b in src]

    assert epoch_indices(1, 2) == epoch_indices(1, 2)
    assert epoch_indices(1, 2) != epoch_indices(1, 3)


def test_in_batch_source_records_a_fixed_probe_batch_after_each_epoch():
    records = []
    table = np.arange(32, dtype=np.float32).reshape(16, 2)
    embed = FakeEmbed(table)
    src = InBatchSource(LABELS, fake_loader(LABELS), SeedRecordingMiner(), classes_per_batch=2, samples_per_class=2,
                        strategy="semihard", seed=0, record=lambda *a, **k: records.append((a, k)))
    for epoch in (1, 2):
        src.start_epoch(epoch, embed)
        assert src.end_epoch(0.5) == {}
    assert len(records) == 2
    (epoch, strategy, triplets, emb), kw = records[0]
    assert (epoch, strategy) == (1, "semihard")
    probe = embed.calls[0]
    assert probe.shape == (4,) and np.array_equal(embed.calls[1], probe)  # the same probe every epoch
    np.testing.assert_array_equal(emb.numpy(), table[probe])
    assert kw["index_of"] == {int(i): r for r, i in enumerate(probe)}
    # One triplet per probe class (2): anchor = its first probe image; the fake miner's only triplet is (0, p, n).
    assert len(triplets) == 2
    assert triplets[0][0] == probe[0] and LABELS[triplets[0][1]] == LABELS[probe[0]]
    assert triplets[1] == (int(probe[2]), None, None)


# --------------------------------------------------------------------------------------------- graph P×K
def two_pairs_table() -> np.ndarray:
    """Classes 0 and 1 interleaved around x = 0, classes 2 and 3 around x = 100: only 0↔1 and 2↔3 are confused."""
    x = np.zeros((16, 2), np.float32)
    for i, c in enumerate(LABELS):
        base = 0.0 if c < 2 else 100.0
        x[i] = (base + (i % 4) + 0.5 * (c % 2), 0.0)
    return x


def test_neighbour_confusion_counts_other_class_neighbours():
    conf = neighbour_confusion(two_pairs_table(), LABELS, 4, ExactIndex, k=3)
    assert conf[0, 1] > 0 and conf[1, 0] > 0 and conf[2, 3] > 0 and conf[3, 2] > 0
    assert conf[0, 2] == conf[0, 3] == conf[1, 2] == conf[2, 0] == conf[3, 1] == 0
    assert np.all(np.diag(conf) == 0)
    # Each point has 3 neighbours in its own group of 8 (4 of its class, 4 of the other): total 16 × 3 = 48, minus
    # the same-class ones. Hand count on the line 0, .5, 1, 1.5, 2, 2.5, 3, 3.5 (class alternating 0/1):
    # the 3 nearest of every point include at least 1 other-class point, so every row of the pair sums to >= 4.
    assert conf[0].sum() >= 4 and conf[1].sum() >= 4


def test_graph_source_pairs_confused_classes_after_warmup():
    embed = FakeEmbed(two_pairs_table())
    src = GraphBatchSource(LABELS, fake_loader(LABELS), SeedRecordingMiner(), num_classes=4, index_factory=ExactIndex,
                           k=3, warmup_epochs=1, classes_per_batch=2, samples_per_class=2)
    assert src.start_epoch(1, embed) == {} and embed.calls == []  # warm-up: random P×K, nothing embedded
    row = src.start_epoch(2, embed)
    assert len(embed.calls) == 1 and embed.calls[0] is None  # the whole training set, once
    assert set(row) == {"embed_seconds", "mining_seconds"} and row["mining_seconds"] >= row["embed_seconds"]
    pairs = {frozenset(np.unique(b.labels.numpy()).tolist()) for b in src}
    assert pairs <= {frozenset({0, 1}), frozenset({2, 3})}
    np.testing.assert_array_equal(src.confusion, neighbour_confusion(two_pairs_table(), LABELS, 4, ExactIndex, k=3))


# --------------------------------------------------------------------------------------------- smart mining
def make_smart(**kwargs) -> SmartMiner:
    return SmartMiner(index_factory=ExactIndex, k=5, adaptive=False, kappa=4.0, warmup_epochs=1, seed=3, **kwargs)


def test_triplet_batch_rows_index_the_distinct_images():
    indices, (a, p, n) = TripletBatch(np.array([5, 2]), np.array([2, 7]), np.array([9, 5]), np.ones(2, bool)).to_batch()
    assert indices.tolist() == [2, 5, 7, 9]
    assert (a.tolist(), p.tolist(), n.tolist()) == ([1, 0], [0, 2], [3, 1])


def test_smart_source_trains_the_plan_in_order():
    src = SmartTripletSource(make_smart(), LABELS, fake_loader(LABELS), triplets_per_batch=5, seed=3)
    embed = FakeEmbed(two_pairs_table())
    plan, _ = make_smart().plan_epoch(None, LABELS, 0)  # the same miner settings plan epoch 1 independently
    row = src.start_epoch(1, embed)
    assert embed.calls == []  # warm-up: nothing embedded
    assert row["mined_triplets"] == 0 and row["random_triplets"] == 16 and row["kappa"] is None
    batches = list(src)
    assert len(batches) == len(src) == 4  # 16 triplets in batches of 5: 5, 5, 5, 1
    got = {"a": [], "p": [], "n": []}
    for b in batches:
        assert b.counted is None
        np.testing.assert_array_equal(b.indices.numpy(), np.unique(b.indices.numpy()))  # distinct images, sorted
        rows = b.mine(torch.zeros(len(b.indices), 2), b.labels)
        for key, r in zip("apn", rows, strict=True):
            got[key] += b.indices[r].tolist()
    assert (got["a"], got["p"], got["n"]) == (plan.a.tolist(), plan.p.tolist(), plan.n.tolist())


def test_smart_source_mined_epoch_embeds_records_and_steers_kappa():
    records = []
    miner = SmartMiner(index_factory=ExactIndex, k=5, kappa_controller=AdaptiveKappa(kappa0=4.0), warmup_epochs=1,
                       seed=3)
    src = SmartTripletSource(miner, LABELS, fake_loader(LABELS), triplets_per_batch=8, count_mined_only=True,
                             seed=3, record=lambda *a, **k: records.append((a, k)))
    embed = FakeEmbed(two_pairs_table())
    src.start_epoch(1, embed)
    assert src.end_epoch(0.5) == {"next_kappa": 4.0}  # a warm-up epoch's error does not move κ
    row = src.start_epoch(2, embed)
    assert len(embed.calls) == 1 and embed.calls[0] is None
    assert row["kappa"] == 4.0 and row["mined_triplets"] + row["random_triplets"] == 16
    assert {"embed_seconds", "mining_seconds", "index_seconds"} <= set(row)
    counted = torch.cat([b.counted for b in src])
    assert int(counted.sum()) == row["mined_triplets"]  # count_mined_only: the mask is the plan's is_mined
    (epoch, strategy, triplets, emb), kw = records[0]
    assert (epoch, strategy, kw["kappa"]) == (2, "smart", 4.0)
    mined_anchors = np.unique(miner.last_selection.anchors)
    assert [t[0] for t in triplets] == src.gallery_anchors and len(triplets) == min(8, len(mined_anchors))
    for a, p, n in triplets:  # each gallery anchor's first mined triplet
        assert a in mined_anchors and LABELS[p] == LABELS[a] and LABELS[n] != LABELS[a]
    assert src.progress() == {"κ": "4"}
    assert src.end_epoch(None) == {"next_kappa": 4.0, "target_error": 0.5}  # nothing counted: the paper's
    # controller keeps κ (the steered one lowers it, tests/smart/test_miner.py)
    # A mined epoch's error does move κ.
    assert src.end_epoch(0.9) == {"next_kappa": AdaptiveKappa(kappa0=4.0).update(0.9), "target_error": 0.5}
    state = src.state_dict()
    other = SmartTripletSource(SmartMiner(index_factory=ExactIndex, k=5, kappa=9.0, warmup_epochs=1, seed=3), LABELS,
                               fake_loader(LABELS), triplets_per_batch=8)
    other.load_state_dict(state)
    assert other.gallery_anchors == src.gallery_anchors and other.miner.state_dict() == miner.state_dict()


def test_smart_source_with_cache_embeds_only_rows_the_last_epoch_missed():
    table = two_pairs_table()
    cache = EmbeddingCache(16, 2)
    src = SmartTripletSource(make_smart(triplets_per_epoch=3), LABELS, fake_loader(LABELS), triplets_per_batch=3,
                             cache=cache)
    embed = FakeEmbed(table)
    src.start_epoch(1, embed)
    visited = set()
    for b in src:
        src.observe(b.indices, torch.from_numpy(table[b.indices.numpy()]))
        visited |= set(b.indices.tolist())
    row = src.start_epoch(2, embed)
    expected = sorted(set(range(16)) - visited)
    assert len(embed.calls) == 1 and embed.calls[0].tolist() == expected
    assert row["cache_refreshed_rows"] == len(expected)


# --------------------------------------------------------------------------------------------- epoch sums
def test_epoch_stats_sum_like_python_floats_and_count_only_counted_triplets():
    stats = EpochStats(torch.device("cpu"))
    losses = [torch.tensor(0.1, dtype=torch.float32), torch.tensor(0.7, dtype=torch.float32)]
    stats.add(losses[0], torch.tensor([True, False, True]), None, {"t": losses[0]}, 6)
    stats.add(losses[1], torch.tensor([True, True, False]), torch.tensor([False, True, True]), {"t": losses[1]}, 4)
    loss_sum, batches, err_num, err_den, images, skipped = stats.totals()
    assert loss_sum == 0.0 + float(losses[0]) + float(losses[1])  # exactly the float64 sum of the float32 values
    assert (batches, err_num, err_den, images, skipped) == (2, 3.0, 5, 10, 0)  # 2 of 3, then 1 of the 2 counted
    assert float(stats.terms["t"]) == loss_sum


@pytest.mark.parametrize("bad", [0, -1])
def test_neighbour_confusion_rejects_bad_k(bad):
    with pytest.raises(ValueError, match="k"):
        neighbour_confusion(two_pairs_table(), LABELS, 4, ExactIndex, k=bad)


def test_smart_source_adds_in_batch_triplets_after_the_plans_and_never_counts_them():
    from smartmine.miners import SemiHardMiner

    seeds: list[int] = []

    def batch_miners(seed: int) -> SemiHardMiner:
        seeds.append(seed)
        return SemiHardMiner()

    src = SmartTripletSource(make_smart(), LABELS, fake_loader(LABELS), triplets_per_batch=5, seed=3,
                             batch_miner_factory=batch_miners)
    plain = SmartTripletSource(make_smart(), LABELS, fake_loader(LABELS), triplets_per_batch=5, seed=3)
    embed = FakeEmbed(two_pairs_table())
    src.start_epoch(2, embed)
    plain.start_epoch(2, embed)
    assert seeds == [epoch_seed(3, 2)]  # a fresh miner per epoch, seeded from (seed, epoch)
    rng = np.random.default_rng(0)
    for b, ref in zip(src, plain, strict=True):
        emb = torch.from_numpy(rng.normal(size=(len(b.indices), 3))).float()
        got = b.mine(emb, b.labels)
        planned = ref.mine(emb, ref.labels)
        extra = SemiHardMiner()(emb, b.labels)  # the miner on its own, over the same batch
        k = len(planned[0])
        for g, p, e in zip(got, planned, extra, strict=True):
            assert g[:k].tolist() == p.tolist() and g[k:].tolist() == e.tolist()
        # error_counts: all -> every plan triplet counts, none of the in-batch additions
        assert b.counted is not None and b.counted.tolist() == [True] * k
    stats = EpochStats(torch.device("cpu"))
    stats.add(torch.tensor(0.5), torch.tensor([True, False, True, True]), torch.tensor([True, True]), {}, 4)
    assert stats.totals()[2:4] == [1.0, 2]  # only the first two (the plan's) triplets count
