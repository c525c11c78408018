"""The runner's cache, atomic finish, resume after a kill, locks and failure isolation.

These use tiny purpose-made notebooks so each case runs in a few seconds; the
real notebooks run end to end in test_pipeline.py.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from tiny_plans import dependency_plan, make_notebook

from analysis import cli, paths, plan, runner, store

WRITES_VALUE = """
    from analysis import artifacts
    artifacts.write(run_dir, "out", {"value": value * 2})
"""


def record(nb_path, value=1):
    params = {"value": value}
    return plan.Run(plan.run_key(nb_path, params, "d"), nb_path.name, params, ["exp"], ["q"])


@pytest.fixture
def env(tmp_path):
    exp = tmp_path / "experiments"
    exp.mkdir()
    return exp, tmp_path / "results"


def run(rec, results, exp, force=False):
    return runner.execute(rec, runner.Settings(results, exp.parent, force, exp))


def batch(runs, results, data_root, exp=paths.EXPERIMENTS_DIR, **kw):
    """runner.run_batch, showing nothing."""
    return runner.run_batch(runs, runner.Settings(results, data_root, experiments_dir=exp),
                            progress=False, **kw)


def test_finished_run_is_cached_and_force_reruns(env, caplog):
    exp, results = env
    rec = record(make_notebook(exp, "ok.ipynb", WRITES_VALUE), value=21)
    first = run(rec, results, exp)
    assert first.status == "finished", first.error
    # The notebook declares no results_dir: papermill's warning about it is not shown.
    assert "results_dir" not in caplog.text
    folder = results / "runs" / rec.key
    assert json.loads((folder / "out.json").read_text()) == {"value": 42}
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "finished" and status["versions"]["torch"]
    assert (folder / "notebook.ipynb").exists()
    assert json.loads((folder / "params.json").read_text())["params"] == {"value": 21}
    assert run(rec, results, exp).status == "cached"
    assert run(rec, results, exp, force=True).status == "finished"
    assert not [p for p in (results / "runs").iterdir() if p.name.startswith(".")]


def test_failure_is_recorded_isolated_and_retried(env):
    exp, results = env
    good = record(make_notebook(exp, "ok.ipynb", WRITES_VALUE))
    bad = record(make_notebook(exp, "bad.ipynb", "raise RuntimeError('planted failure')"))
    outcomes = batch([bad, good], results, exp.parent, exp=exp)
    assert [o.status for o in outcomes] == ["failed", "finished"]
    status = json.loads((results / "runs" / bad.key / "status.json").read_text())
    assert status["status"] == "failed"
    assert "planted failure" in status["error"] and "RuntimeError" in status["traceback"]
    summary = cli.summarize(outcomes, 1.0, results)
    assert "1 failed" in summary and f"FAILED {bad.key}" in summary
    # A failed run is not a cached result: it runs again (and fails again) next time.
    assert run(bad, results, exp).status == "failed"
    assert run(good, results, exp).status == "cached"


def test_diverged_status_comes_from_the_notebook_summary(env):
    exp, results = env
    body = """
        from analysis import artifacts
        artifacts.write(run_dir, "summary", {"status": "diverged",
                                           "diverged_at": {"epoch": 2, "step": 7}})
    """
    rec = record(make_notebook(exp, "div.ipynb", body))
    out = run(rec, results, exp)
    assert out.status == "diverged"
    assert "epoch 2, step 7" in out.error
    assert run(rec, results, exp).status == "cached"


def test_a_run_locked_elsewhere_is_waited_for_then_found_cached(env, tmp_path):
    # Two runners on one results folder: the second waits for the first's run and reuses it.
    exp, results = env
    gate = tmp_path / "go"
    body = f"""
        import pathlib, time
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.1)
        from analysis import artifacts
        artifacts.write(run_dir, "out", {{"value": value}})
    """
    rec = record(make_notebook(exp, "slow.ipynb", body))
    first, second = [], []
    # Daemons, and the gate opened whatever happens: a failing test must not hang the suite.
    holder = threading.Thread(target=lambda: first.append(run(rec, results, exp)), daemon=True)
    waiter = threading.Thread(target=lambda: second.append(run(rec, results, exp)), daemon=True)
    holder.start()
    try:
        lock_file = results / "locks" / f"{rec.key}.lock"
        deadline = time.time() + 60
        while not (lock_file.exists() and _held(lock_file)):
            assert time.time() < deadline, "the first runner never took the lock"
            time.sleep(0.05)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive()  # waiting, not running the same notebook a second time
    finally:
        gate.touch()
    holder.join(120), waiter.join(120)
    assert [first[0].status, second[0].status] == ["finished", "cached"]


def _held(lock_file) -> bool:
    import fcntl

    with open(lock_file) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_killed_run_leaves_no_finished_folder_and_resumes(env, tmp_path):
    exp, results = env
    gate = tmp_path / "go"
    body = f"""
        import os, pathlib, time
        pathlib.Path({str(tmp_path / 'started')!r}).write_text(str(os.getpid()))
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.1)
        from analysis import artifacts
        artifacts.write(run_dir, "out", {{"value": value}})
    """
    rec = record(make_notebook(exp, "slow.ipynb", body))
    script = (f"from analysis import plan, runner; import pathlib, json; "
              f"runner.execute(plan.Run(**json.loads({json.dumps(json.dumps(rec.record()))})), "
              f"runner.Settings(pathlib.Path({str(results)!r}), pathlib.Path('.'), "
              f"experiments_dir=pathlib.Path({str(exp)!r})))")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 120
    started = tmp_path / "started"
    while not (started.exists() and started.read_text()):
        assert time.time() < deadline and proc.poll() is None, "runner never started the notebook"
        time.sleep(0.2)
    kernel = int(started.read_text())
    os.killpg(proc.pid, signal.SIGKILL)  # the runner, mid-run
    os.kill(kernel, signal.SIGKILL)  # and its kernel, which runs in a session of its own
    proc.wait()
    runs_dir = results / "runs"
    assert not (runs_dir / rec.key).exists()
    assert any(p.name.startswith(".tmp-") for p in runs_dir.iterdir())
    assert not store.is_done(results, rec.key)
    gate.touch()
    outcomes = batch([rec], results, exp.parent, exp=exp)
    assert [o.status for o in outcomes] == ["finished"]
    assert not [p for p in runs_dir.iterdir() if p.name.startswith(".")]  # swept


def test_parallel_jobs_and_summary(env):
    exp, results = env
    nb = make_notebook(exp, "ok.ipynb", WRITES_VALUE)
    runs = [record(nb, v) for v in (1, 2, 3)]
    outcomes = batch(runs, results, exp.parent, jobs=2, exp=exp)
    assert sorted(o.status for o in outcomes) == ["finished"] * 3
    again = batch(runs, results, exp.parent, jobs=2, exp=exp)
    assert [o.status for o in again] == ["cached"] * 3
    assert "3 cached" in cli.summarize(again, 0.1, results)


def test_dask_executes_the_same_runs(env):
    distributed = pytest.importorskip("distributed")
    exp, results = env
    nb = make_notebook(exp, "ok.ipynb", WRITES_VALUE)
    runs = [record(nb, v) for v in (5, 6)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        outcomes = batch(runs, results, exp.parent, exp, dask_address=cluster.scheduler_address)
    assert sorted(o.status for o in outcomes) == ["finished", "finished"]
    assert json.loads((results / "runs" / runs[0].key / "out.json").read_text()) == {"value": 10}


# distributed starts a client's event loop under a lock of its own; a client left half-made
# by a failed start, closed by the garbage collector inside that section (which any allocation
# can trigger: here, on purpose), waited on the lock for ever (a CI run hung so).
GC_IN_CLIENT_START = """
from distributed import LocalCluster, utils
import gc
from analysis import runner
start = utils.LoopRunner._start_unlocked
utils.LoopRunner._start_unlocked = lambda self: (gc.collect(), start(self))[1]
with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
    gc.disable()  # the failed client stays garbage until the next one starts
    try:
        runner._dask_client("notanaddress")
    except runner.SchedulerUnreachable:
        pass
    with runner._dask_client(cluster.scheduler_address):
        print("second client up", flush=True)
"""


def test_a_dask_client_that_failed_to_start_cannot_hang_the_next_one():
    pytest.importorskip("distributed")
    done = subprocess.run([sys.executable, "-c", GC_IN_CLIENT_START], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "second client up" in done.stdout, done.stderr[-3000:]


def test_data_fingerprint_sees_any_change_to_the_files(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    file = folder / "data_batch_1"
    file.write_bytes(bytes(1 << 20))  # 1 MiB
    first = runner.data_fingerprint(tmp_path / "data")
    assert runner.data_fingerprint(tmp_path / "data") == first
    blob = bytearray(file.read_bytes())
    blob[-1] = 7  # far past any file head: a label edited in place, say
    file.write_bytes(bytes(blob))
    assert runner.data_fingerprint(tmp_path / "data") != first
    assert runner.data_fingerprint(tmp_path / "nothing") == "absent"


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_a_batch_at_once_and_keeps_nothing_half_done(env, tmp_path, jobs):
    # With one job as with two, runs execute in worker processes (each with its warm
    # kernel): the parent kills them, and their kernels exit when they see their parent go.
    exp, results = env
    started = tmp_path / "started"
    started.mkdir()
    body = f"""
        import os, pathlib, time
        (pathlib.Path({str(started)!r}) / str(os.getpid())).touch()
        time.sleep(300)
    """
    nb = make_notebook(exp, "sleepy.ipynb", body)
    recs = [record(nb, v) for v in (1, 2, 3, 4)]
    records = [r.record() for r in recs]
    script = textwrap.dedent(f"""
        import json, pathlib, signal, sys
        # As in a terminal: a test runner started in the background may ignore SIGINT.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from analysis import plan, runner
        runs = [plan.Run(**r) for r in json.loads({json.dumps(json.dumps(records))})]
        settings = runner.Settings(pathlib.Path({str(results)!r}), pathlib.Path('.'),
                                   experiments_dir=pathlib.Path({str(exp)!r}))
        try:
            runner.run_batch(runs, settings, jobs={jobs}, progress=False)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 120
    while len(list(started.iterdir())) < jobs:
        assert time.time() < deadline and proc.poll() is None, "the runs never started"
        time.sleep(0.2)
    kernels = [int(p.name) for p in started.iterdir()]
    interrupted = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    assert proc.wait(timeout=60) == 130
    assert time.time() - interrupted < 30  # not after the 300 s notebooks
    assert len(list(started.iterdir())) == jobs  # the queued runs never started
    time.sleep(3)  # kernels poll for their parent once a second
    for pid in kernels:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(store.is_done(results, r.key) for r in recs)
    assert not [d for d in (results / "runs").iterdir() if not d.name.startswith(".")]


def test_an_unreachable_dask_scheduler_is_a_clear_error(env, capsys):
    pytest.importorskip("distributed")
    exp, results = env
    nb = make_notebook(exp, "ok.ipynb", WRITES_VALUE)
    with pytest.raises(runner.SchedulerUnreachable, match="tcp://HOST:PORT"):
        batch([record(nb)], results, exp.parent, exp, dask_address="notanaddress")


def test_follow_thread_hint_sets_torch_threads_and_ignores_bad_files(tmp_path, monkeypatch):
    import torch

    from analysis import train

    hint = tmp_path / "run.threads"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.delenv(train.THREADS_FILE_ENV, raising=False)
        train.follow_thread_hint()  # no hint: nothing changes
        assert torch.get_num_threads() == 1
        monkeypatch.setenv(train.THREADS_FILE_ENV, str(hint))
        train.follow_thread_hint()  # the file is not there (yet, or any more)
        assert torch.get_num_threads() == 1
        hint.write_text("2\n")
        train.follow_thread_hint()
        assert torch.get_num_threads() == min(2, os.cpu_count())
        for garbage in ("two", "", "0", "-3", "\xff\xfe"):
            hint.write_text(garbage)
            train.follow_thread_hint()
            assert torch.get_num_threads() == min(2, os.cpu_count()), garbage
    finally:
        torch.set_num_threads(before)


TIMED = """
    import os, time
    from analysis import artifacts
    start = time.time()
    time.sleep(1.0)
    artifacts.write(run_dir, "out", {"start": start, "end": time.time(),
                                   "omp": os.environ.get("OMP_NUM_THREADS"),
                                   "hint": os.environ.get("DLBOOK_THREADS_FILE")})
"""


def _out(results, run):
    return json.loads((results / "runs" / run.key / "out.json").read_text())


def _exclusive_batch(exp):
    nb = make_notebook(exp, "timed.ipynb", TIMED)
    first, alone, last, fixed = (record(nb, v) for v in (1, 2, 3, 4))
    alone.exclusive, fixed.threads = True, 3
    return [first, alone, last, fixed], alone


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_exclusive_run_runs_alone_first_with_every_core(env, fake_data_dir, monkeypatch,
                                                           jobs):
    exp, results = env
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs, alone = _exclusive_batch(exp)
    outcomes = batch(runs, results, fake_data_dir, jobs=jobs, exp=exp)
    assert [o.status for o in outcomes] == ["finished"] * 4
    assert outcomes[0].key == alone.key
    others = [_out(results, r) for r in runs if r is not alone]
    assert _out(results, alone)["end"] <= min(o["start"] for o in others)
    assert _out(results, alone)["omp"] == str(os.cpu_count())
    assert _out(results, runs[3])["omp"] == "3"  # the plan's `threads`
    shared = [_out(results, r) for r in (runs[0], runs[2])]
    if jobs == 1:  # alone anyway: the kernel's own default, no hint to follow
        assert [(o["omp"], o["hint"]) for o in shared] == [(None, None)] * 2
    else:
        assert [o["omp"] for o in shared] == [str(max(1, os.cpu_count() // 2))] * 2
        assert all(o["hint"] for o in shared)
    assert not list((results / "locks").glob("*.threads"))  # hints are removed after runs
    # Runs whose threads the plan sets get a fresh kernel each; the others share warm ones.
    kernels = [_status(results, r)["kernel"] for r in runs]
    assert kernels[1] == kernels[3] == {"pid": None, "earlier_runs": 0}
    if jobs == 1:
        assert kernels[0]["pid"] == kernels[2]["pid"] is not None


def test_dask_runs_an_exclusive_run_alone_before_the_others(env, fake_data_dir, monkeypatch):
    distributed = pytest.importorskip("distributed")
    exp, results = env
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs, alone = _exclusive_batch(exp)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        outcomes = batch(runs, results, fake_data_dir,
                                    dask_address=cluster.scheduler_address, exp=exp)
    assert sorted(o.status for o in outcomes) == ["finished"] * 4
    others = [_out(results, r) for r in runs if r is not alone]
    assert _out(results, alone)["end"] <= min(o["start"] for o in others)
    assert _out(results, alone)["omp"] == str(os.cpu_count())
    # Two runs at once in one worker process, each kernel with its own thread count; runs
    # the plan gives no count keep the worker's (Dask's workers set 1).
    assert _out(results, runs[3])["omp"] == "3"
    assert _out(results, runs[0])["omp"] == _out(results, runs[2])["omp"] != "3"


# Three runs, two jobs: A ends at once; C starts while B runs, so it gets a job's share;
# B waits for C to start, then ends, and C, now alone, is told to take every core.
HINT_A = """
    from analysis import artifacts
    artifacts.write(run_dir, "out", {{}})
"""
HINT_B = """
    import pathlib, time
    from analysis import artifacts
    deadline = time.time() + 120
    while not pathlib.Path({gate!r}).exists() and time.time() < deadline:
        time.sleep(0.1)
    artifacts.write(run_dir, "out", {{}})
"""
HINT_C = """
    import os, pathlib, time
    import torch
    from analysis import artifacts, train
    hint = pathlib.Path(os.environ["DLBOOK_THREADS_FILE"])
    at_start = {{"omp": os.environ["OMP_NUM_THREADS"], "hint": hint.read_text(),
                 "torch": torch.get_num_threads()}}
    pathlib.Path({gate!r}).touch()
    deadline = time.time() + 120
    while hint.read_text() != str(os.cpu_count()) and time.time() < deadline:
        time.sleep(0.1)
    later = hint.read_text()
    train.follow_thread_hint()  # what train.train does at the start of every epoch
    artifacts.write(run_dir, "out", {{"at_start": at_start, "hint_later": later,
                                    "torch_later": torch.get_num_threads()}})
"""


def test_the_last_run_is_told_to_take_the_idle_threads(env, fake_data_dir, tmp_path,
                                                        monkeypatch):
    cpus = os.cpu_count()
    if cpus < 2:
        pytest.skip("one core: there are no idle threads to hand on")
    exp, results = env
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    gate = str(tmp_path / "c-started")
    runs = [record(make_notebook(exp, f"{name}.ipynb", body.format(gate=gate)))
            for name, body in (("a", HINT_A), ("b", HINT_B), ("c", HINT_C))]
    outcomes = batch(runs, results, fake_data_dir, jobs=2, exp=exp)
    assert [o.status for o in outcomes] == ["finished"] * 3, [o.error for o in outcomes]
    c = _out(results, runs[2])
    share = str(cpus // 2)
    assert c["at_start"] == {"omp": share, "hint": share, "torch": cpus // 2}
    assert c["hint_later"] == str(cpus) and c["torch_later"] == cpus


# ---------------------------------------------------------------- warm kernels

# Records the kernel it ran in and what it found there, then leaves state behind that the
# next run in the same kernel must not see: a variable, an open figure, another folder.
WARM = """
    import os, sys
    found = {"pid": os.getpid(), "cwd": os.getcwd(), "marker": "marker" in globals(),
             "torch_loaded": "torch" in sys.modules,
             "hint": os.environ.get("DLBOOK_THREADS_FILE")}
    import torch  # stays imported: what a warm kernel saves
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    found["figures"] = len(plt.get_fignums())
    plt.figure()
    marker = value
    from analysis import artifacts
    artifacts.write(run_dir, "out", found)
    os.chdir(os.path.dirname(run_dir))
"""


def _status(results, run):
    return json.loads((results / "runs" / run.key / "status.json").read_text())


def _execution_counts(results, run):
    nb = json.loads((results / "runs" / run.key / "notebook.ipynb").read_text())
    return [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]


def test_one_job_runs_a_batch_in_one_warm_kernel_with_a_fresh_namespace(env, monkeypatch):
    from analysis import paths

    exp, results = env
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    nb = make_notebook(exp, "warm.ipynb", WARM)
    runs = [record(nb, v) for v in (1, 2, 3)]
    outcomes = batch(runs, results, exp.parent, exp=exp)
    assert [o.status for o in outcomes] == ["finished"] * 3, [o.error for o in outcomes]
    out = [_out(results, r) for r in runs]
    assert len({o["pid"] for o in out}) == 1  # one kernel process for the whole batch
    assert [o["torch_loaded"] for o in out] == [False, True, True]  # modules stay imported
    assert not any(o["marker"] for o in out)  # ... but no variable of an earlier run
    assert [o["figures"] for o in out] == [0, 0, 0]  # nor its figures
    assert {o["cwd"] for o in out} == {str(paths.PROJECT_ROOT)}  # nor its working folder
    assert {o["hint"] for o in out} == {None}  # one job: no thread hint, as before
    kernels = [_status(results, r)["kernel"] for r in runs]
    assert [k["earlier_runs"] for k in kernels] == [0, 1, 2]
    assert {k["pid"] for k in kernels} == {out[0]["pid"]}
    # The saved notebooks number their cells as a fresh kernel does: the reset runs silently.
    assert [_execution_counts(results, r) for r in runs] == [[1, 2, 3]] * 3


def test_two_jobs_each_reuse_their_slot_kernel(env, fake_data_dir, monkeypatch):
    exp, results = env
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    nb = make_notebook(exp, "warm.ipynb", WARM)
    runs = [record(nb, v) for v in (1, 2, 3, 4, 5)]
    outcomes = batch(runs, results, fake_data_dir, jobs=2, exp=exp)
    assert [o.status for o in outcomes] == ["finished"] * 5, [o.error for o in outcomes]
    out = [_out(results, r) for r in runs]
    kernels = [_status(results, r)["kernel"] for r in runs]
    assert len({o["pid"] for o in out}) == 2  # one kernel per slot, five runs
    assert sorted(k["earlier_runs"] for k in kernels).count(0) == 2  # started once each
    assert not any(o["marker"] for o in out) and not any(o["figures"] for o in out)
    # Each slot's kernel follows its own hint file; the files go when the batch ends.
    hint_of = {}
    for o in out:
        assert hint_of.setdefault(o["pid"], o["hint"]) == o["hint"]
    assert len(set(hint_of.values())) == 2 and all(hint_of.values())
    assert not list((results / "locks").glob("*.threads"))


FAILS = """
    import os
    {action}
"""


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_failed_or_dead_kernel_is_replaced_for_the_next_run(env):
    exp, results = env
    nb = make_notebook(exp, "warm.ipynb", WARM)
    raises = make_notebook(exp, "raises.ipynb",
                           FAILS.format(action="raise RuntimeError('planted failure')"))
    dies = make_notebook(exp, "dies.ipynb", FAILS.format(action="os._exit(1)"))
    # Equal costs: the batch keeps this order.
    runs = [record(nb, 1), record(raises), record(nb, 2), record(dies), record(nb, 3)]
    outcomes = batch(runs, results, exp.parent, exp=exp)
    assert [o.status for o in outcomes] == ["finished", "failed", "finished", "failed",
                                            "finished"]
    assert "planted failure" in outcomes[1].error
    pids = [_status(results, r)["kernel"]["pid"] for r in runs]
    assert pids[0] == pids[1]  # the failing run ran in the warm kernel ...
    assert pids[2] != pids[1]  # ... which was replaced after it
    assert pids[3] == pids[2] and pids[4] != pids[3]  # as was the one that died
    assert [_status(results, r)["kernel"]["earlier_runs"] for r in runs] == [0, 1, 0, 1, 0]
    assert all(_gone(pid) for pid in pids)  # replaced ones, and the last at the batch's end


def test_a_warm_kernel_trains_to_the_same_numbers_as_a_fresh_one(fake_data_dir, tmp_path,
                                                                  monkeypatch):
    import pandas as pd

    from analysis import paths

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    nb = paths.EXPERIMENTS_DIR / "train.ipynb"
    fingerprint = runner.data_fingerprint(fake_data_dir)

    def train_run(**params):
        params = {"model": "lenet5", "epochs": 1, "subset": 100, "device": "cpu", **params}
        return plan.Run(plan.run_key(nb, params, fingerprint), "train.ipynb", params,
                        ["determinism"], ["-"])

    probe, before = train_run(), train_run(seed=1, epochs=2)  # longer: it goes first
    fresh, warm = tmp_path / "fresh", tmp_path / "warm"
    outcomes = batch([probe], fresh, fake_data_dir)
    outcomes += batch([probe, before], warm, fake_data_dir)
    assert [o.status for o in outcomes] == ["finished"] * 3, [o.error for o in outcomes]
    assert _status(fresh, probe)["kernel"]["earlier_runs"] == 0
    assert _status(warm, probe)["kernel"]["earlier_runs"] == 1  # after `before`, same kernel
    timing = ["seconds"]
    metrics = [pd.read_csv(r / "runs" / probe.key / "metrics.csv").drop(columns=timing)
               for r in (fresh, warm)]
    pd.testing.assert_frame_equal(*metrics)
    steps = [pd.read_csv(r / "runs" / probe.key / "steps.csv") for r in (fresh, warm)]
    pd.testing.assert_frame_equal(*steps)
    summaries = [json.loads((r / "runs" / probe.key / "summary.json").read_text())
                 for r in (fresh, warm)]
    for part in ("init", "test", "best_val_acc"):
        assert summaries[0][part] == summaries[1][part], part


# ---------------------------------------------------------------- runs that need runs

def _dependency_runs(folder, **kw):
    """The tiny plan's runs (tiny_plans.dependency_plan): pair a, pair b, then the
    landscape runs, each needing the pair run of its model."""
    _, path = dependency_plan(folder, **kw)
    return plan.expand(plan.load(path), "smoke", "d", experiments_dir=folder)


def _pick(runs, experiment, model):
    return next(r for r in runs if experiment in r.experiments and r.params["model"] == model)


def _reads_what_it_needs(results, runs):
    for model in ("a", "b"):
        made = _out(results, _pick(runs, "pair", model))
        looked = _out(results, _pick(runs, "landscape", model))
        assert looked["seen"] == made  # through results_dir / "runs" / trained_run
        assert looked["start"] >= made["end"]


def test_a_run_starts_once_the_run_it_needs_is_finished_not_the_batch(env, tmp_path):
    exp, results = env
    gate = str(tmp_path / "landscape-a-started")
    # pair b ends only once landscape a has started: landscape a waits for pair a alone.
    runs = _dependency_runs(exp, make_extra=f"""
        import pathlib
        while model == "b" and not pathlib.Path({gate!r}).exists():
            assert time.time() < out["start"] + 60, "landscape a waited for pair b"
            time.sleep(0.1)
        """, look_extra=f"pathlib.Path({gate!r}).touch()")
    outcomes = batch(runs, results, exp.parent, jobs=2, exp=exp)
    assert [o.status for o in outcomes] == ["finished"] * 4, [o.error for o in outcomes]
    _reads_what_it_needs(results, runs)
    # Retrained needed runs: the landscapes of the old ones are stale, the new ones pending.
    the_plan = plan.load(exp / "plan.yaml")
    the_plan["experiments"]["pair"]["params"] = {"value": 2}
    retrained = plan.expand(the_plan, "smoke", "d", experiments_dir=exp)
    assert {(r["experiments"], r["state"], r["stale"])
            for r in cli.status_rows(results, retrained)} == {("pair", "missing", 0),
                                                                 ("landscape", "pending", 1)}


def test_dask_starts_a_run_once_the_run_it_needs_is_finished(env):
    distributed = pytest.importorskip("distributed")
    exp, results = env
    runs = _dependency_runs(exp, make_extra="time.sleep(1)")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        outcomes = batch(runs, results, exp.parent,
                                    dask_address=cluster.scheduler_address, exp=exp)
    assert [o.status for o in outcomes] == ["finished"] * 4, [o.error for o in outcomes]
    _reads_what_it_needs(results, runs)


def test_a_run_whose_needed_run_failed_fails_unexecuted_and_status_says_why(env, capsys):
    exp, results = env
    runs = _dependency_runs(
        exp, make_extra='if model == "b": raise RuntimeError("planted failure")')
    pair_b, look_a, look_b = (_pick(runs, "pair", "b"), _pick(runs, "landscape", "a"),
                              _pick(runs, "landscape", "b"))
    rows = {r["key"]: r for r in cli.status_rows(results, runs)}
    assert (rows[look_b.key]["state"], rows[look_b.key]["waits"]) == (
        "pending", "pair model=b seed=0 (missing)")
    # The needed runs first, alone: pair b fails, and landscape b waits on a failed run.
    batch([r for r in runs if "pair" in r.experiments], results, exp.parent, exp=exp)
    rows = cli.status_rows(results, runs)
    waits = "pair model=b seed=0 (failed: RuntimeError: planted failure)"
    assert {r["key"]: (r["state"], r["waits"]) for r in rows} == {
        _pick(runs, "pair", "a").key: ("cached", None), pair_b.key: ("failed", None),
        look_a.key: ("missing", None), look_b.key: ("pending", waits)}
    cli.print_status(rows, "smoke", results)
    printed = capsys.readouterr().out
    assert f"waits for {waits}" in printed and "pending 1," in printed
    # The whole batch: pair b is retried and fails again; landscape b is not executed.
    outcomes = {o.key: o for o in batch(runs, results, exp.parent, exp=exp)}
    assert [outcomes[r.key].status for r in runs] == ["cached", "failed", "finished", "failed"]
    error = (f"needs run {pair_b.key} (pair model=b seed=0), which failed: RuntimeError: "
             "planted failure; fix that run and run again")
    assert outcomes[look_b.key].error == error
    assert _status(results, look_b)["status"] == "failed"
    assert not (results / "runs" / look_b.key / "notebook.ipynb").exists()  # never executed
    row = next(r for r in cli.status_rows(results, runs) if r["key"] == look_b.key)
    assert (row["state"], row["error"]) == ("failed", error)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_whose_needed_run_is_nowhere_fails_unexecuted(env, jobs):
    exp, results = env
    runs = _dependency_runs(exp)
    needed, look = _pick(runs, "pair", "a"), _pick(runs, "landscape", "a")
    [outcome] = batch([look], results, exp.parent, jobs=jobs, exp=exp)
    assert outcome.status == "failed"
    assert outcome.error == (f"needs run {needed.key}, which is neither in this batch nor "
                             f"finished under {results}; run `dlbook run --only landscape`, "
                             "which runs it first")
    assert _status(results, look)["error"] == outcome.error
    assert not (results / "runs" / look.key / "notebook.ipynb").exists()


def test_a_diverged_or_dead_needed_run_is_unmet(tmp_path):
    from analysis.artifacts import write

    write(tmp_path / "runs" / "k1", "status", {"status": "finished"})
    write(tmp_path / "runs" / "k2", "status", {"status": "diverged", "error": "loss became "
                                               "non-finite at epoch 2, step 7"})
    run = plan.Run("x", "look.ipynb", {}, ["landscape"], needs=["k1"])
    assert runner.unmet_need(run, tmp_path, {}, {}) is None
    both = plan.Run("x", "look.ipynb", {}, ["landscape"], needs=["k1", "k2"])
    assert runner.unmet_need(both, tmp_path, {}, {"k2": "pair model=b seed=0"}) == (
        "needs run k2 (pair model=b seed=0), which diverged: loss became non-finite at "
        "epoch 2, step 7; fix that run and run again")
    # A worker that died left no record: the batch's outcome says what happened.
    dead = runner.Outcome("k1", "failed", error="runner process died (exit code -9)")
    assert runner.unmet_need(run, tmp_path, {"k1": dead}, {}) == (
        "needs run k1, which failed: runner process died (exit code -9); fix that run and "
        "run again")


def test_run_only_a_dependent_experiment_brings_the_runs_it_needs(env, fake_data_dir,
                                                                  monkeypatch):
    exp, results = env
    _, path = dependency_plan(exp, models=["b"])
    the_plan, expand = plan.load(path), plan.expand
    monkeypatch.setattr(plan, "load", lambda: the_plan)
    monkeypatch.setattr(plan, "expand", lambda *a, **kw: expand(*a, experiments_dir=exp, **kw))
    *_, selected = runner.prepare("smoke", fake_data_dir, results, only=["q-look"])
    assert sorted((r.experiments, r.params["model"]) for r in selected) == [
        (["landscape"], "b"), (["pair"], "b")]
