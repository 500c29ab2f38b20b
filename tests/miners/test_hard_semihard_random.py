"""Exact choices of the deterministic miners on hand-built batches and against a NumPy brute force; random miner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from smartmine.miners.hard import HardMiner
from smartmine.miners.random import RandomMiner
from smartmine.miners.semihard import SemiHardMiner


def line(values: list[float]) -> torch.Tensor:
    """Points on a line as a (B, 1) float64 embedding: distances are |u - v|, easy to check by hand."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def as_lists(triplets):
    return [t.tolist() for t in triplets]


def test_semihard_hand_built():
    # idx:      0    1    2    3    4
    x = line([0.0, 1.0, 0.5, 1.5, 3.2])
    y = torch.tensor([0, 0, 1, 1, 2])
    # (0,1): D_ap=1, negatives at 0.5, 1.5, 3.2 -> closest beyond 1 is idx 3 (1.5)
    # (1,0): D_ap=1, negatives at 0.5, 0.5, 2.2 -> idx 4
    # (2,3): D_ap=1, negatives at 0.5, 0.5, 2.7 -> idx 4
    # (3,2): D_ap=1, negatives at 1.5, 0.5, 1.7 -> idx 0
    assert as_lists(SemiHardMiner()(x, y)) == [[0, 1, 2, 3], [1, 0, 3, 2], [3, 4, 4, 0]]


def test_semihard_falls_back_to_hardest_negative():
    x = line([0.0, 2.0, 0.8, -0.5])
    y = torch.tensor([0, 0, 1, 1])
    # (0,1): D_ap=2, negatives at 0.8, 0.5: none beyond -> hardest, idx 3
    # (1,0): D_ap=2, negatives at 1.2, 2.5 -> idx 3
    # (2,3): D_ap=1.3, negatives at 0.8, 1.2: none beyond -> hardest, idx 0
    # (3,2): D_ap=1.3, negatives at 0.5, 2.5 -> idx 1
    assert as_lists(SemiHardMiner()(x, y)) == [[0, 1, 2, 3], [1, 0, 3, 2], [3, 3, 0, 1]]


def test_hard_hand_built():
    # idx:      0    1     2    3    4     5
    x = line([0.0, 1.0, -2.0, 0.7, 2.5, -1.2])
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    # anchor 0: positives at 1, 2 -> farthest idx 2; negatives at 0.7, 2.5, 1.2 -> nearest idx 3
    # anchor 1: positives at 1, 3 -> idx 2; negatives at 0.3, 1.5, 2.2 -> idx 3
    # anchor 2: positives at 2, 3 -> idx 1; negatives at 2.7, 4.5, 0.8 -> idx 5
    # anchor 3: positive idx 4; negatives at 0.7, 0.3, 2.7, 1.9 -> idx 1
    # anchor 4: positive idx 3; negatives at 2.5, 1.5, 4.5, 3.7 -> idx 1
    # anchor 5: alone in its class -> no triplet
    assert as_lists(HardMiner()(x, y)) == [[0, 1, 2, 3, 4], [2, 2, 1, 4, 3], [3, 3, 5, 1, 1]]


def brute_force(x: np.ndarray, y: np.ndarray, kind: str) -> list[tuple[int, int, int]]:
    """Loop-by-loop re-derivation of the semi-hard / batch-hard rules on plain distances."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    out = []
    for a in range(len(y)):
        positives = [j for j in range(len(y)) if j != a and y[j] == y[a]]
        negatives = [j for j in range(len(y)) if y[j] != y[a]]
        if not positives or not negatives:
            continue
        hardest_n = min(negatives, key=lambda j: d[a, j])
        if kind == "hard":
            out.append((a, max(positives, key=lambda j: d[a, j]), hardest_n))
            continue
        for p in positives:
            beyond = [j for j in negatives if d[a, j] > d[a, p]]
            out.append((a, p, min(beyond, key=lambda j: d[a, j]) if beyond else hardest_n))
    return out


@pytest.mark.parametrize("kind, miner", [("semihard", SemiHardMiner()), ("hard", HardMiner())])
@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(kind, miner, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, 5, size=30)
    got = list(zip(*as_lists(miner(torch.from_numpy(x), torch.from_numpy(y))), strict=True))
    assert got == brute_force(x, y, kind)


def test_semihard_count_is_one_per_positive_pair():
    x = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    y = torch.arange(4).repeat_interleave(5)
    a, _, _ = SemiHardMiner()(x, y)
    assert a.numel() == 4 * 5 * 4  # P * K * (K - 1)


def test_random_miner_counts_and_uniform_choices():
    # One anchor class of 5 items and 6 negatives; anchor 0's draws should be uniform over its 4 positives and
    # over the 6 negatives.
    y = torch.tensor([0] * 5 + [1, 1, 2, 2, 3, 3])
    x = torch.nn.functional.normalize(torch.randn(11, 4), dim=1)
    miner = RandomMiner(triplets_per_anchor=50, seed=123)
    pos_counts = np.zeros(11)
    neg_counts = np.zeros(11)
    for _ in range(40):
        a, p, n = miner(x, y)
        assert a.tolist() == [i for i in range(11) for _ in range(50)]
        np.add.at(pos_counts, p[a == 0].numpy(), 1)
        np.add.at(neg_counts, n[a == 0].numpy(), 1)
    assert pos_counts[0] == 0 and neg_counts[:5].sum() == 0
    assert stats.chisquare(pos_counts[1:5]).pvalue > 1e-3
    assert stats.chisquare(neg_counts[5:]).pvalue > 1e-3
