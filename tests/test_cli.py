"""The command line as a newcomer meets it: usage errors name the subcommand and the fix,
and `dlbook status` says what is cached, what it found, and what to do."""
import pytest

from analysis import artifacts, cli, data, plan


def test_a_mistyped_flag_gets_the_subcommands_usage_and_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--jbos", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: dlbook run" in err and "--jbos (did you mean --jobs?)" in err


def test_jobs_default_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("DLBOOK_JOBS", raising=False)
    assert cli.build_parser().parse_args(["run"]).jobs == 1
    monkeypatch.setenv("DLBOOK_JOBS", "4")
    assert cli.build_parser().parse_args(["run"]).jobs == 4
    assert cli.build_parser().parse_args(["run", "--jobs", "2"]).jobs == 2


@pytest.mark.parametrize("value, message", [("abc", "'abc' is not a whole number"),
                                            ("0", "0 must be at least 1")])
def test_jobs_must_be_a_positive_whole_number(monkeypatch, capsys, value, message):
    monkeypatch.setenv("DLBOOK_JOBS", value)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run"])
    err = capsys.readouterr().err
    assert message in err and "DLBOOK_JOBS" in err


def test_flops_help_names_every_model(capsys):
    from analysis.models import MODELS

    with pytest.raises(SystemExit):
        cli.main(["flops", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert all(model in out for model in MODELS)


def test_an_unwritable_results_folder_is_a_clear_error(fake_data_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["run", "--profile", "smoke", "--only", "lenet-init", "--data-dir",
                     str(fake_data_dir), "--results", str(blocker / "results"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the results folder" in err and "--results DIR" in err


def test_seeds_outside_the_profile_are_refused(fake_data_dir, tmp_path, capsys):
    code = cli.main(["run", "--profile", "smoke", "--only", "lenet-baseline", "--seeds", "0",
                     "99", "--data-dir", str(fake_data_dir), "--results", str(tmp_path)])
    assert code == 2 and "--seeds 99: not among the seeds" in capsys.readouterr().err


# ---------------------------------------------------------------- status

def test_status_reports_without_writing_anything(fake_data_dir, tmp_path, capsys):
    code = cli.main(["status", "--profile", "smoke", "--data-dir", str(fake_data_dir),
                     "--results", str(tmp_path / "r")])
    assert code == 0 and "missing" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()  # the book's index is written by `run` only


def test_status_without_data_says_where_to_point_at_once(tmp_path, capsys, monkeypatch):
    def read_plan():
        raise AssertionError("status read the plan before finding the data missing")

    monkeypatch.setattr(plan, "load", read_plan)
    monkeypatch.setattr(data, "load_cifar10", read_plan)  # nothing downloaded or decoded
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLBOOK_DATA", raising=False)
    assert cli.main(["status", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no CIFAR-10 in {tmp_path / 'data'}" in err
    assert "point --data-dir or DLBOOK_DATA at the folder holding cifar-10-batches-py/" in err


def test_the_data_folder_itself_is_taken_for_its_parent(fake_data_dir, tmp_path, capsys):
    listed = []
    for folder in (fake_data_dir / data.FOLDER, fake_data_dir):
        assert cli.main(["status", "--profile", "smoke", "--only", "lenet-init", "--data-dir",
                         str(folder), "--results", str(tmp_path)]) == 0
        listed.append(capsys.readouterr().out)
    assert listed[0] == listed[1] and "lenet-init seed=0" in listed[0]  # same data, same keys


def _record(results, run, status, **summary):
    artifacts.write(results / "runs" / run.key, "status", status)
    artifacts.write(results / "runs" / run.key, "summary", summary)


def test_status_tells_a_collapsed_run_and_a_failed_ones_error(tmp_path, capsys):
    runs = [plan.Run(f"k{i}", "train.ipynb", {"lr": lr, "seed": 0}, ["sweep"],
                     label=f"sweep lr={lr} seed=0") for i, lr in enumerate((0.01, 2.0, 10.0))]
    learned, collapsed, failed = runs
    _record(tmp_path, learned, {"status": "finished"}, best_val_acc=0.55)
    _record(tmp_path, collapsed, {"status": "finished"}, best_val_acc=0.1)
    _record(tmp_path, failed, {"status": "failed", "error": "RuntimeError: planted failure"})
    rows = {r["key"]: r for r in cli.status_rows(tmp_path, runs)}
    assert [(rows[r.key]["state"], rows[r.key]["result"]) for r in runs] == [
        ("cached", "finished"), ("cached", "collapsed"), ("failed", "failed")]
    cli.print_status(list(rows.values()), "smoke", tmp_path)
    out = capsys.readouterr().out
    assert "error: RuntimeError: planted failure" in out
    assert "cached 2 (1 collapsed)" in out and "never above chance" in out
