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
import time

import nbformat
import pytest

from analysis import plan, runner


def make_notebook(folder, name, body, params="run_dir = 'x'\ndata_dir = None\nvalue = 1\n"):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(textwrap.dedent(body))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / name)
    return folder / name


WRITES_VALUE = """
    from analysis import results
    results.write(run_dir, "out", {"value": value * 2})
"""


def record(nb_path, value=1):
    params = {"value": value}
    return {"key": plan.run_key(nb_path, params, "d"), "notebook": nb_path.name,
            "params": params, "experiments": ["exp"], "questions": ["q"]}


@pytest.fixture
def env(tmp_path):
    exp = tmp_path / "experiments"
    exp.mkdir()
    return exp, tmp_path / "results"


def run(rec, results, exp, force=False):
    return runner.execute(rec, results, exp.parent, force=force, experiments_dir=exp)


def test_finished_run_is_cached_and_force_reruns(env):
    exp, results = env
    rec = record(make_notebook(exp, "ok.ipynb", WRITES_VALUE), value=21)
    first = run(rec, results, exp)
    assert first.status == "finished", first.error
    folder = results / "runs" / rec["key"]
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
    outcomes = runner.run_batch([plan.Run(**bad), plan.Run(**good)], results, exp.parent,
                                progress=False, experiments_dir=exp)
    assert [o.status for o in outcomes] == ["failed", "finished"]
    status = json.loads((results / "runs" / bad["key"] / "status.json").read_text())
    assert status["status"] == "failed"
    assert "planted failure" in status["error"] and "RuntimeError" in status["traceback"]
    summary = runner.summarize(outcomes, 1.0, results)
    assert "1 failed" in summary and f"FAILED {bad['key']}" in summary
    # A failed run is not a cached result: it runs again (and fails again) next time.
    assert run(bad, results, exp).status == "failed"
    assert run(good, results, exp).status == "cached"


def test_diverged_status_comes_from_the_notebook_summary(env):
    exp, results = env
    body = """
        from analysis import results
        results.write(run_dir, "summary", {"status": "diverged",
                                           "diverged_at": {"epoch": 2, "step": 7}})
    """
    rec = record(make_notebook(exp, "div.ipynb", body))
    out = run(rec, results, exp)
    assert out.status == "diverged"
    assert "epoch 2, step 7" in out.error
    assert run(rec, results, exp).status == "cached"


def test_lock_stops_a_second_process(env):
    exp, results = env
    rec = record(make_notebook(exp, "ok.ipynb", WRITES_VALUE))
    with runner._lock(results, rec["key"]) as mine:
        assert mine
        assert run(rec, results, exp).status == "locked"
    assert run(rec, results, exp).status == "finished"


def test_killed_run_leaves_no_finished_folder_and_resumes(env, tmp_path):
    exp, results = env
    gate = tmp_path / "go"
    body = f"""
        import os, pathlib, time
        pathlib.Path({str(tmp_path / 'started')!r}).write_text(str(os.getpid()))
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.1)
        from analysis import results
        results.write(run_dir, "out", {{"value": value}})
    """
    rec = record(make_notebook(exp, "slow.ipynb", body))
    script = (f"from analysis import runner; import pathlib, json; "
              f"runner.execute(json.loads({json.dumps(json.dumps(rec))}), "
              f"pathlib.Path({str(results)!r}), pathlib.Path('.'), "
              f"experiments_dir=pathlib.Path({str(exp)!r}))")
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
    assert not (runs_dir / rec["key"]).exists()
    assert any(p.name.startswith(".tmp-") for p in runs_dir.iterdir())
    assert not runner.is_done(results, rec["key"])
    gate.touch()
    outcomes = runner.run_batch([plan.Run(**rec)], results, exp.parent, progress=False,
                                experiments_dir=exp)
    assert [o.status for o in outcomes] == ["finished"]
    assert not [p for p in runs_dir.iterdir() if p.name.startswith(".")]  # swept


def test_parallel_jobs_and_summary(env):
    exp, results = env
    nb = make_notebook(exp, "ok.ipynb", WRITES_VALUE)
    runs = [plan.Run(**record(nb, v)) for v in (1, 2, 3)]
    outcomes = runner.run_batch(runs, results, exp.parent, jobs=2, progress=False,
                                experiments_dir=exp)
    assert sorted(o.status for o in outcomes) == ["finished"] * 3
    again = runner.run_batch(runs, results, exp.parent, jobs=2, progress=False,
                             experiments_dir=exp)
    assert [o.status for o in again] == ["cached"] * 3
    assert "3 cached" in runner.summarize(again, 0.1, results)


def test_dask_executes_the_same_runs(env):
    distributed = pytest.importorskip("distributed")
    exp, results = env
    nb = make_notebook(exp, "ok.ipynb", WRITES_VALUE)
    runs = [plan.Run(**record(nb, v)) for v in (5, 6)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        outcomes = runner.run_batch(runs, results, exp.parent, progress=False,
                                    dask_address=cluster.scheduler_address, experiments_dir=exp)
    assert sorted(o.status for o in outcomes) == ["finished", "finished"]
    assert json.loads((results / "runs" / runs[0].key / "out.json").read_text()) == {"value": 10}


def test_jobs_default_comes_from_the_environment(monkeypatch):
    from analysis import cli

    monkeypatch.delenv("DLBOOK_JOBS", raising=False)
    assert cli.build_parser().parse_args(["run"]).jobs == 1
    monkeypatch.setenv("DLBOOK_JOBS", "4")
    assert cli.build_parser().parse_args(["run"]).jobs == 4
    assert cli.build_parser().parse_args(["run", "--jobs", "2"]).jobs == 2
