"""The shared thread pool of the compiled kernels."""

from __future__ import annotations

import multiprocessing as mp
import sys

import pytest

from smartmine._threads import run_chunks, shared_pool

BOUNDS = [(lo, lo + 3) for lo in range(0, 30, 3)]


def _square_sum(lo: int, hi: int) -> int:
    return sum(v * v for v in range(lo, hi))


def test_results_in_bound_order_for_any_thread_count():
    serial = [_square_sum(lo, hi) for lo, hi in BOUNDS]
    for threads in (1, 2, 3):
        assert run_chunks(_square_sum, BOUNDS, threads) == serial


def test_one_pool_per_thread_count_is_reused():
    assert shared_pool(2) is shared_pool(2)
    assert shared_pool(2) is not shared_pool(3)


def _child(queue) -> None:
    queue.put(run_chunks(_square_sum, BOUNDS, 2))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_gets_a_working_pool():
    """A pool made in the parent has no threads in a forked child (e.g. a DataLoader worker); the child must get a
    new one instead of waiting forever on the parent's."""
    run_chunks(_square_sum, BOUNDS, 2)  # the parent's pool exists
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's thread pool")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == [_square_sum(lo, hi) for lo, hi in BOUNDS]
