"""The whole pipeline on the smoke profile: every notebook through papermill, the
results API, resume, and every chapter of the real book executing (`dlbook check`)."""
import json
import shutil

import pytest
import rendering

from analysis import answers, book, cli, data, paths, plan, results, runner, store, train


@pytest.fixture(scope="session")
def smoke(fake_data_dir, tmp_path_factory):
    """Run the whole smoke plan once for the session (a few minutes on 2 cores)."""
    out = tmp_path_factory.mktemp("results")
    mp = pytest.MonkeyPatch()
    mp.setenv(paths.DATA_ENV, str(fake_data_dir))
    mp.setenv(paths.RESULTS_ENV, str(out))
    mp.setenv(paths.PROFILE_ENV, "smoke")
    code = cli.main(["run", "--profile", "smoke", "--jobs", "2", "--quiet"])
    yield code, out
    mp.undo()


def test_smoke_plan_runs_end_to_end(smoke):
    code, out = smoke
    index = json.loads((out / "index" / "smoke.json").read_text())
    statuses = {r["key"]: json.loads((out / "runs" / r["key"] / "status.json").read_text())
                for r in index}
    failed = {k: s.get("error") for k, s in statuses.items() if s["status"] == "failed"}
    assert code == 0 and not failed, failed
    for rec in index:
        status = statuses[rec["key"]]["status"]
        # Only a deliberately huge learning rate may diverge; it is a result, not a failure.
        assert status == "finished" or (status == "diverged" and rec["params"].get("lr", 0) >= 1.0)
        assert (out / "runs" / rec["key"] / "notebook.ipynb").exists()


def test_second_run_is_fully_cached(smoke, capsys):
    code, out = smoke
    assert cli.main(["run", "--profile", "smoke", "--quiet"]) == 0
    summary = capsys.readouterr().out
    n = len(json.loads((out / "index" / "smoke.json").read_text()))
    assert f"{n} runs: 0 executed" in summary and f"{n} cached" in summary


def test_status_lists_every_planned_run(smoke, capsys):
    assert cli.main(["status", "--profile", "smoke"]) == 0
    text = capsys.readouterr().out
    assert "missing 0" in text and "failed 0" in text
    assert "lenet-baseline" in text


def test_results_api_returns_tidy_frames(smoke):
    runs = results.runs(experiment="lenet-baseline")
    assert set(runs["status"]) == {"finished"}
    assert {"key", "lr", "seed", "best_val_acc", "test_best_acc", "init_val_loss"} <= set(runs)
    metrics = results.table("metrics", question="lab1-g")
    assert {"epoch", "train_loss", "val_acc", "seed", "key"} <= set(metrics)
    long = results.table("metrics", experiment="lenet-baseline", long=True)
    assert set(long["split"]) == {"train", "val"} and set(long["metric"]) == {"loss", "acc"}
    # Curves compare like with like: "train" is the clean measurement, not the running one.
    train_acc = long.query("split == 'train' and metric == 'acc'").sort_values(["key", "epoch"])
    wide = metrics.sort_values(["key", "epoch"])
    assert train_acc["value"].tolist() == wide["clean_train_acc"].tolist()
    assert train_acc["value"].tolist() != wide["train_acc"].tolist()
    with pytest.raises(results.ResultsMissing, match="no run"):
        results.runs(experiment="no-such-experiment")


def test_runs_record_whether_the_data_is_the_official_copy(smoke, monkeypatch):
    # Generated data is not the official CIFAR-10: every run and the provenance say so.
    assert set(results.runs(experiment="lenet-baseline")["data_official"]) == {False}
    assert results.provenance()["data_official"] == [False]
    # The check itself: pixels that hash to the official values count as official.
    monkeypatch.setattr(data, "OFFICIAL_PIXELS", data.pixel_hashes(paths.data_dir()))
    identity = runner.data_identity(paths.data_dir())
    assert identity["official"] and identity["pixels_sha256"] == data.OFFICIAL_PIXELS


def test_partial_results_are_refused_with_the_command_that_completes_them(smoke, tmp_path):
    _, out = smoke
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    planned = results.runs(experiment="lenet-init", results=copy)
    shutil.rmtree(copy / "runs" / planned["key"].iloc[0])
    with pytest.raises(results.ResultsMissing,
                       match=rf"1 of the {len(planned)} runs of 'lenet-init'.*1 missing.*"
                             r"dlbook run --profile smoke --only lenet-init"):
        results.runs(experiment="lenet-init", results=copy)
    shown = results.runs(experiment="lenet-init", results=copy, include_missing=True)
    assert (shown["status"] == "missing").sum() == 1


def test_a_run_whose_notebook_failed_after_its_summary_is_refused(smoke, tmp_path):
    # train.ipynb writes summary.json (status "finished") before its plotting cells; if one
    # of those fails, the runner marks the run failed, and that verdict must win.
    _, out = smoke
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    key = results.runs(experiment="lenet-baseline", results=copy)["key"].iloc[0]
    status_file = copy / "runs" / key / "status.json"
    status = json.loads(status_file.read_text())
    assert json.loads((copy / "runs" / key / "summary.json").read_text())["status"] == "finished"
    status_file.write_text(json.dumps({**status, "status": "failed", "error": "plot cell"}))
    with pytest.raises(results.ResultsMissing,
                       match=rf"1 failed.*--only lenet-baseline --results {copy}"):
        results.runs(experiment="lenet-baseline", results=copy)


def test_train_notebook_declares_every_training_option():
    declared = plan.notebook_parameters(paths.EXPERIMENTS_DIR / "train.ipynb")
    assert set(declared) - set(plan.RUNNER_PARAMS) == set(train.DEFAULTS)
    assert {k: declared[k] for k in train.DEFAULTS} == train.DEFAULTS


def test_missing_data_fails_before_any_run(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    code = cli.main(["run", "--profile", "smoke", "--data-dir", str(tmp_path / "nowhere"),
                     "--results", str(tmp_path / "r")])
    assert code == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert not (tmp_path / "r" / "runs").exists()


def test_book_check_passes_on_the_real_book(smoke):
    # Smoke runs two seeds, so this executes the chapters' several-seed code (means,
    # intervals, "within noise"), the shape of the full profile's results.
    _, out = smoke
    assert {r["params"]["seed"] for r in results.load_index("smoke", out)} >= {0, 1}
    problems = book.check(paths.PROJECT_ROOT, results_dir=out, profile="smoke")
    assert problems == [], "\n".join(map(str, problems))


def test_every_question_has_a_finding_on_the_smoke_results(smoke):
    _, out = smoke
    table = answers.glance(results_dir=out)
    assert len(table) == len(answers.records())
    assert answers.NO_RESULTS not in set(table["in numbers"]) | set(table["answer"])
    assert table["in numbers"].str.len().gt(0).all()


def test_book_check_passes_on_single_seed_results(smoke, tmp_path):
    # The cpu profile's shape: one seed per configuration, "a single run" prose.
    _, out = smoke
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    index = copy / "index" / "smoke.json"
    records = json.loads(index.read_text())
    seed0 = [r for r in records if r["params"]["seed"] == 0
             or r["experiments"] == ["lenet-init"]]  # lenet-init is a many-seed measurement
    assert len(seed0) < len(records)
    index.write_text(json.dumps(seed0))
    problems = book.check(paths.PROJECT_ROOT, results_dir=copy, profile="smoke")
    assert problems == [], "\n".join(map(str, problems))


def test_book_check_fails_on_a_planted_broken_reference(tmp_path):
    root = tmp_path / "book-copy"
    shutil.copytree(paths.PROJECT_ROOT, root, ignore=shutil.ignore_patterns(
        ".venv", ".git", "results", "data", "_book", "__pycache__", ".*cache"))
    chapter = root / "book" / "lab1.qmd"
    chapter.write_text(chapter.read_text() + "\nSee @fig-lab1-g-curvs.\n")
    problems = book.check(root, execute=False)
    assert any("fig-lab1-g-curvs" in str(p) and "lab1.qmd" in str(p) for p in problems)


def test_quarto_renders_the_book(smoke):
    if shutil.which("quarto") is None:
        pytest.skip("quarto not on PATH: install Quarto >= 1.9 (pip install quarto-cli) "
                    "to render the book in tests")
    _, out = smoke
    code, log = rendering.render(paths.PROJECT_ROOT, profile="smoke")
    assert code == 0, log[-3000:]
    assert "Unable to resolve crossref" not in log and "Unable to resolve link target" not in log


def test_runner_rejects_an_unknown_question(capsys):
    assert cli.main(["run", "--profile", "smoke", "--only", "lab9-z"]) == 2
    assert "lab9-z" in capsys.readouterr().err


def test_key_of_a_finished_run_matches_the_plan(smoke, fake_data_dir):
    _, out = smoke
    runs = plan.expand(plan.load(), "smoke", runner.data_fingerprint(fake_data_dir))
    assert all(store.is_done(out, r.key) for r in runs)
