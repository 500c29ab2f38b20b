"""Invariants every in-batch miner must satisfy, on arbitrary batches (hypothesis), plus the shared contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmine.miners.distance_weighted import DistanceWeightedMiner
from smartmine.miners.hard import HardMiner
from smartmine.miners.random import RandomMiner
from smartmine.miners.semihard import SemiHardMiner

MINERS = {
    "random": lambda: RandomMiner(triplets_per_anchor=2, seed=0),
    "semihard": lambda: SemiHardMiner(seed=0),
    "hard": lambda: HardMiner(seed=0),
    "dw_uniform": lambda: DistanceWeightedMiner(seed=0),
    "dw_drop": lambda: DistanceWeightedMiner(empty_row="drop", seed=0),
}


@st.composite
def batches(draw):
    """Normalised embeddings with small random labels; some rows duplicated so that zero distances occur."""
    b = draw(st.integers(0, 20))
    dim = draw(st.integers(1, 8))
    labels = draw(st.lists(st.integers(-2, 4), min_size=b, max_size=b))
    seed = draw(st.integers(0, 2**16))
    x = torch.nn.functional.normalize(torch.randn(b, dim, generator=torch.Generator().manual_seed(seed)), dim=1)
    if b >= 2 and draw(st.booleans()):
        x[1] = x[0]
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return x.to(dtype), torch.tensor(labels, dtype=torch.long)


def expected_anchor_set(y: np.ndarray) -> set[int]:
    """Anchors that admit a triplet: another item of the class and at least one item of another class."""
    return {i for i in range(len(y)) if (y == y[i]).sum() >= 2 and (y != y[i]).any()}


@pytest.mark.parametrize("name", sorted(MINERS))
@settings(max_examples=40, deadline=None)
@given(batch=batches())
def test_triplet_invariants(name, batch):
    x, y = batch
    a, p, n = MINERS[name]()(x, y)
    yn = y.numpy()
    for t in (a, p, n):
        assert t.dtype == torch.long and t.dim() == 1 and t.shape == a.shape
        assert t.numel() == 0 or (int(t.min()) >= 0 and int(t.max()) < len(yn))
    a, p, n = a.numpy(), p.numpy(), n.numpy()
    assert (yn[a] == yn[p]).all()
    assert (a != p).all()
    assert (yn[n] != yn[a]).all()
    anchors = expected_anchor_set(yn)
    assert set(a.tolist()) <= anchors
    if not anchors:  # empty, single-class, or no positive pair
        assert a.size == 0
    elif name in ("random", "semihard", "hard", "dw_uniform"):
        assert set(a.tolist()) == anchors  # every eligible anchor is served


@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize(
    "labels",
    [[], [3], [1, 1, 1, 1], [0, 1, 2, 3, 4]],
    ids=["empty", "one", "single_class", "no_positive_pair"],
)
def test_no_triplets_from_degenerate_batches(name, labels):
    x = torch.nn.functional.normalize(torch.randn(len(labels), 4), dim=1)
    a, p, n = MINERS[name]()(x, torch.tensor(labels, dtype=torch.long))
    assert a.numel() == p.numel() == n.numel() == 0
    assert a.dtype == torch.long


@pytest.mark.parametrize("name", sorted(MINERS))
def test_same_seed_same_triplets_and_no_grad(name):
    x = torch.nn.functional.normalize(torch.randn(24, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    x.requires_grad_(True)
    y = torch.arange(6).repeat_interleave(4)
    m1, m2 = MINERS[name](), MINERS[name]()
    for _ in range(2):  # successive calls continue the same stream
        t1, t2 = m1(x, y), m2(x, y)
        for u, v in zip(t1, t2, strict=True):
            assert torch.equal(u, v)
            assert not u.requires_grad


@pytest.mark.parametrize("name", ["random", "dw_uniform"])
def test_different_seeds_differ(name):
    x = torch.nn.functional.normalize(torch.randn(32, 8, generator=torch.Generator().manual_seed(4)), dim=1)
    y = torch.arange(8).repeat_interleave(4)
    cls = type(MINERS[name]())
    kwargs = {"triplets_per_anchor": 2} if name == "random" else {}
    n1 = cls(seed=1, **kwargs)(x, y)[2]
    n2 = cls(seed=2, **kwargs)(x, y)[2]
    assert not torch.equal(n1, n2)


@pytest.mark.parametrize("name", sorted(MINERS))
def test_max_triplets_is_a_subset(name):
    x = torch.nn.functional.normalize(torch.randn(24, 8, generator=torch.Generator().manual_seed(5)), dim=1)
    y = torch.arange(4).repeat_interleave(6)
    cls = type(MINERS[name]())
    full = cls(seed=0)(x, y)
    capped = cls(seed=0, max_triplets=7)(x, y)
    assert capped[0].numel() == 7 < full[0].numel()
    full_set = set(zip(*(t.tolist() for t in full), strict=True))
    capped_set = set(zip(*(t.tolist() for t in capped), strict=True))
    if name in ("semihard", "hard"):  # deterministic choices: the cap keeps a subset of the very same triplets
        assert capped_set <= full_set
    for a, p, n in capped_set:
        assert y[a] == y[p] and a != p and y[n] != y[a]


def test_labels_on_numpy_and_half_embeddings():
    x = torch.nn.functional.normalize(torch.randn(12, 8), dim=1).half()
    y = np.repeat(np.arange(3), 4)
    a, p, n = HardMiner()(x, y)
    assert a.numel() == 12


@pytest.mark.parametrize("name", sorted(MINERS))
def test_bad_input_raises_named_error(name):
    miner = MINERS[name]()
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="labels"):
        miner(x, torch.tensor([0, 0, 1, 1, 2]))  # wrong length
    with pytest.raises(ValueError, match="labels"):
        miner(x, torch.tensor([0.0, 0, 1, 1, 2, 2]))  # float labels
    with pytest.raises(ValueError, match="embeddings"):
        miner(torch.randn(6), torch.tensor([0, 0, 1, 1, 2, 2]))  # not 2-D
    x_nan = x.clone()
    x_nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match="embeddings"):
        miner(x_nan, torch.tensor([0, 0, 1, 1, 2, 2]))


@pytest.mark.parametrize(
    "factory, arg",
    [
        (lambda: RandomMiner(triplets_per_anchor=0), "triplets_per_anchor"),
        (lambda: HardMiner(max_triplets=0), "max_triplets"),
        (lambda: SemiHardMiner(seed=1.5), "seed"),
        (lambda: DistanceWeightedMiner(cutoff=0.0), "cutoff"),
        (lambda: DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=0.4), "nonzero_loss_cutoff"),
        (lambda: DistanceWeightedMiner(nonzero_loss_cutoff=2.5), "nonzero_loss_cutoff"),
        (lambda: DistanceWeightedMiner(empty_row="skip"), "empty_row"),
    ],
)
def test_bad_constructor_arguments(factory, arg):
    with pytest.raises(ValueError, match=arg):
        factory()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(MINERS))
def test_cuda_matches_cpu(name):
    x = torch.nn.functional.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(6)), dim=1)
    y = torch.arange(8).repeat_interleave(4)
    cpu = MINERS[name]()(x, y)
    gpu = MINERS[name]()(x.cuda(), y.cuda())
    for u, v in zip(cpu, gpu, strict=True):
        assert v.device.type == "cuda"
        if name in ("semihard", "hard"):
            assert torch.equal(u, v.cpu())
    a, p, n = (t.cpu() for t in gpu)
    assert (y[a] == y[p]).all() and (a != p).all() and (y[n] != y[a]).all()
