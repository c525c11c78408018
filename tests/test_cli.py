"""The command line as a newcomer meets it: usage errors name the subcommand and the fix."""
import pytest

from analysis import cli, plan, runner


def test_a_mistyped_flag_gets_the_subcommands_usage_and_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--jbos", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: dlbook run" in err and "--jbos (did you mean --jobs?)" in err


def test_run_labels_name_the_parameters_that_set_a_run_apart():
    runs = [plan.Run(f"k{i}", "train.ipynb", {"lr": lr, "epochs": 5, "seed": seed},
                     experiments=["sweep"])
            for i, (lr, seed) in enumerate([(0.1, 0), (0.1, 1), (0.01, 0)])]
    runs.append(plan.Run("k9", "train.ipynb", {"lr": 0.1, "epochs": 5, "seed": 0},
                         experiments=["alone"]))
    assert plan.labels(runs) == {"k0": "sweep lr=0.1 seed=0", "k1": "sweep lr=0.1 seed=1",
                                 "k2": "sweep lr=0.01 seed=0", "k9": "alone seed=0"}


def test_time_left_prices_the_runs_to_come_at_the_pace_of_the_executed_ones():
    fixed = runner.TimeLeft.FIXED_COST
    costs = {"latency": 0.0, "a": 3 * fixed, "b": 3 * fixed, "c": 7 * fixed, "d": 7 * fixed}
    left = runner.TimeLeft(costs, jobs=2)
    assert left.done("latency", seconds=200) == "time left unknown yet"  # sets no pace
    assert left.done("c", cached=True) == "time left unknown yet"  # took no time: no pace
    # a (4 units) took 60 s: b (4 units) and d (8 units) are 180 s of work, on 2 jobs 90 s.
    assert left.done("a", seconds=60) == "about 90 s left"
    assert left.done("b", seconds=60) == "about 60 s left"
    assert left.done("d", seconds=120) == "done"
