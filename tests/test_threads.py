"""The shared thread pool of the compiled kernels."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import pytest

from smartmine._threads import run_chunks, shared_pool

BOUNDS = [(lo, lo + 3) for lo in range(0, 30, 3)]


def _square_sum(lo: int, hi: int) -> int:
    return sum(v * v for v in range(lo, hi))


def test_results_in_bound_order_for_any_thread_count():
    serial = [_square_sum(lo, hi) for lo, hi in BOUNDS]
    for threads in (1, 2, 3):
        assert run_chunks(_square_sum, BOUNDS, threads) == serial


def test_an_exception_stops_new_chunks_and_is_raised_after_all_threads_stop():
    started: list[int] = []

    def work(lo: int, hi: int) -> int:
        started.append(lo)
        if lo == 9:  # the fourth chunk
            raise ValueError("chunk 3 failed")
        return lo

    with pytest.raises(ValueError, match="chunk 3 failed"):
        run_chunks(work, BOUNDS, 2)
    # Chunks are claimed in order: 0-3 up to the failure, at most one more claimed by the other thread meanwhile;
    # without the stop all ten would run.
    assert 4 <= len(started) <= 5 and max(started) <= 12
    assert run_chunks(_square_sum, BOUNDS, 2) == [_square_sum(lo, hi) for lo, hi in BOUNDS]  # the pool still works


def test_the_calling_thread_takes_part():
    import threading

    seen: set[int] = set()

    def work(lo: int, hi: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.01)  # long enough for both threads to take chunks
        return lo

    assert run_chunks(work, BOUNDS, 2) == [lo for lo, _ in BOUNDS]
    assert threading.get_ident() in seen and len(seen) == 2


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
