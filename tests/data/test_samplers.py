"""PKBatchSampler: full coverage per epoch, P distinct classes × K, determinism, distributed shares, bad input."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmine.data.samplers import PKBatchSampler


def check_epoch(sampler: PKBatchSampler, labels: np.ndarray, batches: list[list[int]]) -> None:
    """Structure of every batch, and coverage of every eligible image, checked against the raw labels."""
    p, k = sampler.classes_per_batch, sampler.samples_per_class
    counts = Counter(labels.tolist())
    eligible = {c for c, n in counts.items() if n >= 2}
    for batch in batches:
        assert len(batch) == p * k
        per_class = Counter(labels[batch].tolist())
        assert len(per_class) == p  # P distinct classes
        assert set(per_class.values()) == {k}  # K each
        assert set(per_class) <= eligible
        for c in per_class:  # repeats inside a class's K only when the class is smaller than K
            chunk = [i for i in batch if labels[i] == c]
            assert len(set(chunk)) == min(k, counts[c])
    covered = {i for batch in batches for i in batch}
    assert covered == {i for i, c in enumerate(labels.tolist()) if c in eligible}


@st.composite
def label_sets(draw):
    num_classes = draw(st.integers(2, 12))
    sizes = draw(st.lists(st.integers(1, 15), min_size=num_classes, max_size=num_classes))
    labels = np.repeat(np.arange(num_classes) * 3 - 5, sizes)  # arbitrary (negative, sparse) label values
    np.random.default_rng(draw(st.integers(0, 1000))).shuffle(labels)
    eligible = sum(s >= 2 for s in sizes)
    p = draw(st.integers(2, max(2, eligible)))
    k = draw(st.integers(2, 6))
    return labels, p, k, eligible


@settings(max_examples=50, deadline=None)
@given(case=label_sets(), epoch=st.integers(0, 5))
def test_every_image_once_per_epoch(case, epoch):
    labels, p, k, eligible = case
    if eligible < p:
        with pytest.raises(ValueError, match="classes_per_batch"):
            PKBatchSampler(labels, p, k)
        return
    sampler = PKBatchSampler(labels, p, k, seed=3)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    check_epoch(sampler, labels, batches)
    # As short as the constraints allow: room for every chunk of K, and one batch per chunk of the largest class.
    chunks = [-(-n // k) for n in Counter(labels.tolist()).values() if n >= 2]
    assert len(sampler) == max(-(-sum(chunks) // p), max(chunks))


def test_small_hand_case():
    # Class sizes 5, 2, 9, 1, 3 with P=2, K=4: chunks 2 + 1 + 3 + 1 = 7 -> 4 batches (8 slots), class 3 excluded.
    labels = np.array([0] * 5 + [1] * 2 + [2] * 9 + [3] + [4] * 3)
    sampler = PKBatchSampler(labels, classes_per_batch=2, samples_per_class=4, seed=1)
    assert sampler.eligible_classes == [0, 1, 2, 4]
    assert sampler.excluded_classes == [3]
    assert sampler.batch_size == 8
    assert len(sampler) == 4
    batches = list(sampler)
    check_epoch(sampler, labels, batches)
    assert 16 not in {i for b in batches for i in b}  # the single image of class 3


def test_deterministic_per_seed_and_epoch():
    labels = np.repeat(np.arange(10), [3, 4, 5, 6, 7, 8, 2, 2, 9, 4])
    a = PKBatchSampler(labels, 4, 3, seed=7)
    b = PKBatchSampler(torch.from_numpy(labels), 4, 3, seed=7)
    assert list(a) == list(b)
    assert list(a) == list(a)  # without set_epoch the epoch repeats (as torch's DistributedSampler)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    assert list(PKBatchSampler(labels, 4, 3, seed=8)) != first
    assert a.global_batches(epoch=0) == first


@pytest.mark.parametrize("replicas", [2, 3])
def test_ranks_get_disjoint_equal_shares(replicas):
    labels = np.repeat(np.arange(9), [3, 4, 5, 6, 7, 8, 2, 2, 9])
    samplers = [PKBatchSampler(labels, 3, 4, seed=5, num_replicas=replicas, rank=r) for r in range(replicas)]
    for s in samplers:
        s.set_epoch(2)
    shares = [list(s) for s in samplers]
    assert len({len(s) for s in samplers}) == 1
    assert all(len(share) == len(samplers[0]) for share in shares)
    everything = samplers[0].global_batches()
    assert len(everything) == replicas * len(samplers[0])
    # The shares partition the global plan by position: rank r holds positions r, r + R, ...
    for r, share in enumerate(shares):
        assert share == everything[r::replicas]
    check_epoch(samplers[0], labels, [b for share in shares for b in share])


def test_works_as_dataloader_batch_sampler():
    labels = np.repeat(np.arange(5), 4)
    data = torch.utils.data.TensorDataset(torch.arange(20), torch.from_numpy(labels))
    sampler = PKBatchSampler(labels, 2, 2, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    seen = torch.cat([idx for idx, _ in loader])
    assert sorted(seen.tolist()) == list(range(20))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"classes_per_batch": 1, "samples_per_class": 2}, "classes_per_batch"),
        ({"classes_per_batch": 2, "samples_per_class": 1}, "samples_per_class"),
        ({"classes_per_batch": 5, "samples_per_class": 2}, "classes_per_batch"),  # only 4 eligible classes
        ({"classes_per_batch": 2, "samples_per_class": 2, "seed": -1}, "seed"),
        ({"classes_per_batch": 2, "samples_per_class": 2, "num_replicas": 0}, "num_replicas"),
        ({"classes_per_batch": 2, "samples_per_class": 2, "num_replicas": 2, "rank": 2}, "rank"),
        ({"classes_per_batch": 2.0, "samples_per_class": 2}, "classes_per_batch"),
    ],
)
def test_bad_arguments(kwargs, arg):
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])  # class 4 has one image: 4 eligible classes
    with pytest.raises(ValueError, match=arg):
        PKBatchSampler(labels, **kwargs)


def test_bad_labels_and_epoch():
    with pytest.raises(ValueError, match="labels"):
        PKBatchSampler(np.array([0.0, 0.0, 1.0, 1.0]), 2, 2)
    with pytest.raises(ValueError, match="labels"):
        PKBatchSampler(np.zeros((4, 2), dtype=np.int64), 2, 2)
    with pytest.raises(ValueError, match="classes_per_batch"):
        PKBatchSampler(np.array([], dtype=np.int64), 2, 2)
    with pytest.raises(ValueError, match="epoch"):
        PKBatchSampler(np.array([0, 0, 1, 1]), 2, 2).set_epoch(-1)


def test_classes_mix_across_batches():
    # 100 classes x 32 images, 16 x 4 batches: each class is in 8 batches with 15 partners each (120 partner
    # slots); random mixing meets ~70 of the 99 other classes, a fixed grouping would meet far fewer.
    labels = np.repeat(np.arange(100), 32)
    sampler = PKBatchSampler(labels, 16, 4, seed=0)
    partners: dict[int, set[int]] = {c: set() for c in range(100)}
    for batch in sampler:
        classes = set(labels[batch].tolist())
        for c in classes:
            partners[c] |= classes - {c}
    assert len(sampler) == 50
    assert min(len(v) for v in partners.values()) >= 45
