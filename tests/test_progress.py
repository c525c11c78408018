"""The time left a batch shows: from the plan and a measurement, before any run has ended."""
import time

import pytest

from analysis import plan, progress, runner

LENET = {"model": "lenet5", "epochs": 2, "subset": 1000, "val_size": 100, "device": "cpu"}


def _run(key, notebook="train.ipynb", **params):
    return plan.Run(key, notebook, {**LENET, **params} if notebook == "train.ipynb" else params,
                    ["exp"])


def test_a_calibration_gives_the_time_left_before_any_run_ends():
    runs = [_run("a"), _run("b", epochs=4)]
    pace = {"lenet5": progress.Pace(train=0.01, forward=0.002)}
    left = progress.TimeLeft(runs, pace)
    work = [plan.expected_work(r.notebook, r.params) for r in runs]
    expected = sum(progress.FIXED_SECONDS + w.train * 0.01 + w.forward * 0.002 for w in work)
    assert left.seconds() == pytest.approx(expected)
    assert left.text().startswith(f"about {progress.duration(expected)} left, until ")
    assert progress.TimeLeft(runs, {}).text() == "time left unknown yet"  # nothing measured


def test_the_time_left_learns_from_executed_runs_and_counts_running_ones():
    runs = [_run(k) for k in "abcd"] + [_run("table", notebook="costs.ipynb")]
    pace = {"lenet5": progress.Pace(train=0.01, forward=0.002)}
    left = progress.TimeLeft(runs, pace, jobs=2)
    each = left.estimate["a"]
    fixed = progress.FIXED_SECONDS
    assert left.seconds() == pytest.approx((4 * each + fixed) / 2)
    left.done("table", seconds=3 * fixed)  # took three times its guess: the next would too
    left.done("a", seconds=2 * each)  # ... and so do the other training runs
    assert left.seconds() == pytest.approx(3 * 2 * each / 2)
    left.done("b")  # not executed (cached): no pace from it
    assert left.seconds() == pytest.approx(2 * 2 * each / 2)
    left.started("c", now=0.0)
    # One run left to start, one half done: shared by the jobs, but never less than the
    # longest single run, which one job alone must see through.
    assert left.seconds(now=each) == pytest.approx(2 * each)
    left.done("c", seconds=2 * each)
    assert left.seconds() == pytest.approx(2 * each)
    left.done("d", seconds=2 * each)
    assert left.text() == "done"


def test_a_run_without_a_measured_model_is_priced_after_one_of_its_notebook_ran():
    runs = [_run("a"), _run("b")]
    left = progress.TimeLeft(runs, {"resnet20": progress.Pace(1.0, 1.0)})
    assert left.seconds() is None
    left.done("a", seconds=40.0)
    assert left.seconds() == pytest.approx(40.0)


def test_an_exclusive_run_counts_whole_whatever_the_jobs():
    runs = [_run("latency", notebook="costs.ipynb"), _run("x", notebook="costs.ipynb")]
    left = progress.TimeLeft(runs, {}, jobs=4, alone={"latency"})
    assert left.seconds() == pytest.approx(2 * progress.FIXED_SECONDS)


def test_calibration_measures_each_model_in_seconds():
    start = time.perf_counter()
    pace = progress.calibrate([_run("a", batch_size=32), _run("b", epochs=9, batch_size=64),
                               _run("t", notebook="costs.ipynb")], threads=1)
    assert set(pace) == {"lenet5"}  # once per model; a latency table has no work to price
    assert 0 < pace["lenet5"].forward < pace["lenet5"].train
    assert time.perf_counter() - start < 60
    assert progress.calibrate([_run("t", notebook="costs.ipynb")]) == {}


def test_nothing_is_measured_when_nothing_is_to_execute(tmp_path, monkeypatch, capsys):
    from analysis import artifacts

    def measure(*a, **kw):
        raise AssertionError("calibrated a batch with nothing to execute")

    monkeypatch.setattr(progress, "calibrate", measure)
    runs = [_run("a")]
    artifacts.write(tmp_path / "runs" / "a", "status", {"status": "finished"})
    settings = runner.Settings(tmp_path, tmp_path)
    progress.Progress(runs, settings, show=True).close()
    progress.Progress([_run("b")], settings, show=False).close()  # nobody to tell
    assert capsys.readouterr().err == ""


def test_a_log_gets_one_line_per_executed_run_with_one_time_left(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "calibrate", lambda runs, threads: {
        "lenet5": progress.Pace(train=0.01, forward=0.002)})
    runs = [_run("a"), _run("b")]
    report = progress.Progress(runs, runner.Settings(tmp_path, tmp_path), show=True)
    report.done(runner.Outcome("a", "finished", 12.0, best_val_acc=0.1))
    report.close()
    first, line = capsys.readouterr().err.strip().splitlines()
    assert first.startswith("dlbook run: 2 of 2 runs to execute, about ")
    assert line.startswith("[1/2] a collapsed (12 s; about ") and line.count("left") == 1
