"""Calls in worker processes (sr7t.parallel): results in order, errors as raised, the
workers' prints kept out of their results, their threads set."""

from __future__ import annotations

import os

import pytest

from sr7t.parallel import THREAD_VARIABLES, WorkerError, call_in_processes


def shout_and_square(x: int) -> tuple[int, int, str]:
    print("a line a worker prints")  # must not reach the parent's result
    return x * x, os.getpid(), os.environ.get("OMP_NUM_THREADS")


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def die() -> None:
    os._exit(3)


def test_results_in_call_order_from_other_processes():
    out = call_in_processes(shout_and_square, [(i,) for i in range(5)], workers=2, threads=3)
    assert [o[0] for o in out] == [0, 1, 4, 9, 16]
    pids = {o[1] for o in out}
    assert os.getpid() not in pids and len(pids) == 5  # one process per call
    assert {o[2] for o in out} == {"3"} and "OMP_NUM_THREADS" in THREAD_VARIABLES


def test_one_worker_runs_here():
    out = call_in_processes(shout_and_square, [(2,), (3,)], workers=1)
    assert [o[:2] for o in out] == [(4, os.getpid()), (9, os.getpid())]


def test_a_workers_error_is_raised_as_raised():
    with pytest.raises(ValueError, match="bad input 2"):
        call_in_processes(fail_on, [(1, 2), (2, 2), (3, 2)], workers=2)


def test_a_worker_that_dies_is_named():
    with pytest.raises(WorkerError, match="die: its worker process exited with status 3"):
        call_in_processes(die, [(), ()], workers=2)
