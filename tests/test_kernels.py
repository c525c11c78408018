"""The CPU threads each run's kernel gets (the warm kernels themselves are exercised through
whole batches in test_runner.py)."""
import os

import pytest

from analysis import kernels, plan


@pytest.mark.parametrize("cpus, jobs, running, pending, threads", [
    (8, 4, 4, 3, 2),  # runs wait for a slot: an even share of the jobs' slots
    (8, 4, 1, 3, 2),  # ... also for a run started while others still start
    (8, 4, 4, 0, 2),  # none waits, every slot busy
    (8, 4, 3, 0, 2),  # one finished: 8 // 3
    (8, 4, 2, 0, 4),  # two finished (or two runs from the start): their threads to the two
    (8, 4, 1, 0, 8),  # the last run gets every core
    (2, 4, 3, 0, 1),  # never below one thread
    (2, 4, 1, 0, 2),
])
def test_thread_share_gives_idle_threads_to_the_last_runs(cpus, jobs, running, pending, threads):
    assert kernels.thread_share(cpus, jobs, running, pending) == threads


def _run(exclusive=False, threads=None):
    return plan.Run("k", "train.ipynb", {}, exclusive=exclusive, threads=threads)


def test_kernel_threads_plan_first_then_user_then_share(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert kernels.kernel_threads(_run(exclusive=True, threads=3), 2) == 3
    assert kernels.kernel_threads(_run(exclusive=True), 2) == 6
    assert kernels.kernel_threads(_run(), 2) == 2
    assert kernels.kernel_threads(_run()) is None  # one run at a time: the kernel's own default
    assert kernels.shares_cores(_run()) and not kernels.shares_cores(_run(threads=3))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice beats the runner's share
    assert kernels.kernel_threads(_run(), 2) is None and not kernels.shares_cores(_run())
    # ... but not the plan's: an exclusive run gets every core (Dask workers set it to 1).
    assert kernels.kernel_threads(_run(exclusive=True), 2) == 6
    assert kernels.kernel_threads(_run(threads=3), 2) == 3
    assert kernels.kernel_env(_run(threads=3), 2, "hint") == {"OMP_NUM_THREADS": "3",
                                                              "DLBOOK_THREADS_FILE": "hint"}
