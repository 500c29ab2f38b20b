"""class_confusion counts and the graph-composed P×K sampler: shape, coverage, sharding, and that confused classes
share batches far more often than under random composition."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from smartmine.smart.graph_batches import GraphPKBatchSampler, class_confusion


def test_class_confusion_hand_computed():
    labels = np.array([0, 0, 1, 2])
    nbr = np.array([[1, 2], [2, 3], [0, -1], [2, 1]])
    conf = class_confusion(nbr, labels, 4)
    want = np.zeros((4, 4), np.int64)
    want[0, 1] = 2  # 0->2, 1->2
    want[0, 2] = 1  # 1->3
    want[1, 0] = 1  # 2->0 (the -1 pad ignored)
    want[2, 1] = 1  # 3->2 ; 3->1 is class 2 -> class 0
    want[2, 0] = 1
    assert np.array_equal(conf, want)
    with pytest.raises(ValueError, match="labels"):
        class_confusion(nbr, np.array([0, 0, 1, 5]), 4)
    with pytest.raises(ValueError, match="neighbour_indices"):
        class_confusion(np.array([[4, 0]] * 4), labels, 4)


def make_labels(n_classes=20, per_class=9, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, per_class + 1, n_classes)
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)] + [[n_classes]])  # + one singleton class
    return rng.permutation(labels)


def paired_confusion(n_classes):
    """Classes 2i and 2i+1 are confused with each other, nothing else."""
    conf = np.zeros((n_classes, n_classes))
    for c in range(0, n_classes - 1, 2):
        conf[c, c + 1] = 10
    return conf


def test_batches_have_p_classes_of_k_and_cover_every_image():
    labels = make_labels()
    p, k = 4, 3
    s = GraphPKBatchSampler(labels, p, k, paired_confusion(21), seed=1)
    s.set_epoch(3)
    batches = list(s)
    assert len(batches) == len(s) > 0
    seen = set()
    for b in batches:
        assert len(b) == p * k
        cls = s.batch_classes(b)
        assert len(set(cls)) == p
        assert all(labels[b[j * k + t]] == cls[j] for j in range(p) for t in range(k))
        seen.update(b)
    eligible = {i for i in range(labels.size) if labels[i] != 20}
    assert seen == eligible  # every image of every eligible class; never the singleton class


def test_confused_classes_share_batches_more_often_than_random():
    labels = np.repeat(np.arange(20), 8)
    p, k = 4, 2

    def partner_rate(conf):
        s = GraphPKBatchSampler(labels, p, k, conf, seed=0)
        hits = total = 0
        for epoch in range(3):
            for b in s.global_batches(epoch):
                cls = set(s.batch_classes(b))
                hits += sum((c ^ 1) in cls for c in cls)
                total += len(cls)
        return hits / total

    graph = partner_rate(paired_confusion(20))
    random = partner_rate(np.zeros((20, 20)))
    # Random composition: a class's partner is among the other 3 of 19 classes ~16% of the time.
    assert random < 0.3
    assert graph > 0.8


def test_deterministic_per_epoch_and_sharded():
    labels = make_labels(seed=2)
    conf = paired_confusion(21)
    s = GraphPKBatchSampler(labels, 3, 2, conf, seed=4)
    assert s.global_batches(1) == GraphPKBatchSampler(labels, 3, 2, conf, seed=4).global_batches(1)
    assert s.global_batches(1) != s.global_batches(2)
    shards = [GraphPKBatchSampler(labels, 3, 2, conf, seed=4, num_replicas=3, rank=r) for r in range(3)]
    for sh in shards:
        sh.set_epoch(1)
    all_batches = shards[0].global_batches()
    assert len(all_batches) % 3 == 0 and all(len(sh) == len(all_batches) // 3 for sh in shards)
    merged = [b for r in range(3) for b in list(shards[r])]
    assert sorted(map(tuple, merged)) == sorted(map(tuple, all_batches))


def test_small_classes_and_bad_input():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])  # class sizes 2, 3, 2, 1 with K = 4
    s = GraphPKBatchSampler(labels, 2, 4, np.ones((4, 4)))
    counts = Counter(i for b in s for i in b)
    assert set(counts) == set(range(7))
    with pytest.raises(ValueError, match="classes_per_batch"):
        GraphPKBatchSampler(labels, 4, 2, np.ones((4, 4)))
    with pytest.raises(ValueError, match="confusion"):
        GraphPKBatchSampler(labels, 2, 2, np.ones((3, 3)))
    with pytest.raises(ValueError, match="confusion"):
        GraphPKBatchSampler(labels, 2, 2, -np.ones((4, 4)))
    with pytest.raises(ValueError, match="rank"):
        GraphPKBatchSampler(labels, 2, 2, np.ones((4, 4)), num_replicas=2, rank=2)
