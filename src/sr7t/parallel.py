"""Independent calls side by side, each in its own Python process.

``python -m sr7t.parallel`` runs one call: the function and its arguments pickled on stdin,
its result (or the exception it raised) pickled on stdout; anything it prints goes to the
parent's stderr, the job's log. Not :mod:`multiprocessing`: a spawned child re-runs the
parent's ``__main__``, which in a Snakemake job is the stage's script itself, and a forked one
can hang on locks that ITK's, OpenMP's or MLflow's threads held in the parent.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sr7t import LOG_FORMAT

# What sets the threads of ITK, OpenMP (torch) and MKL: read when they load
THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class WorkerError(RuntimeError):
    """A worker process died without a result (killed, or its result would not pickle)."""


def call_in_processes(fn: Callable, calls: Sequence[tuple], workers: int, threads: int = 1) -> list:
    """``[fn(*args) for args in calls]``, in up to ``workers`` processes at a time with
    ``threads`` threads each (ITK, OpenMP, torch); in this process when ``workers`` <= 1 or
    there is one call. ``fn`` must be a module-level function; the first call's exception is
    raised here as the worker raised it."""
    calls = list(calls)
    workers = min(int(workers), len(calls))
    if workers <= 1:
        return [fn(*args) for args in calls]
    env = os.environ | dict.fromkeys(THREAD_VARIABLES, str(max(int(threads), 1)))
    # the workers import what this process can (a test's module, a checkout on sys.path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)

    def one(args):
        proc = subprocess.run(
            [sys.executable, "-m", __name__],
            input=pickle.dumps((fn, args)),
            stdout=subprocess.PIPE,
            env=env,
            check=False,
        )
        try:
            ok, value = pickle.loads(proc.stdout)
        except Exception as err:  # noqa: BLE001 - any unreadable result is the worker's death
            raise WorkerError(
                f"{fn.__module__}.{fn.__qualname__}: its worker process exited with status "
                f"{proc.returncode} and no result (its output is in the log above)"
            ) from err
        if not ok:
            raise value
        return value

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, calls))


def _main() -> None:
    # The result goes to the original stdout; the call's own prints to stderr.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    fn, args = pickle.load(sys.stdin.buffer)
    try:
        outcome = (True, fn(*args))
    except Exception as err:  # noqa: BLE001 - handed to the parent, which raises it
        import traceback

        traceback.print_exc()
        outcome = (False, err)
    try:
        data = pickle.dumps(outcome)
    except Exception as err:  # noqa: BLE001
        data = pickle.dumps((False, WorkerError(f"unpicklable result or error: {err!r}")))
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)


if __name__ == "__main__":
    _main()
