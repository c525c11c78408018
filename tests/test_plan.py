"""The plan: validation messages, expansion, sharing, and what a run key depends on."""
import copy
import shutil

import pytest
import yaml
from tiny_plans import dependency_plan, write_plan

from analysis import paths, plan


@pytest.fixture(scope="module")
def real_plan():
    return plan.load()


def test_real_plan_is_valid_and_expands_on_every_profile(real_plan):
    for profile in plan.PROFILES:
        runs = plan.expand(real_plan, profile, "data")
        assert runs, profile
        assert len({r.key for r in runs}) == len(runs)
        for r in runs:
            assert r.questions and r.experiments


def test_every_question_of_the_plan_has_runs_on_smoke(real_plan):
    runs = plan.expand(real_plan, "smoke", "data")
    covered = {q for r in runs for q in r.questions}
    declared = {q for e in real_plan["experiments"].values() for q in e["questions"]}
    assert covered == declared


def test_full_profile_uses_three_seeds_for_comparisons(real_plan):
    runs = plan.expand(real_plan, "full", "data", only=["lenet-baseline"])
    assert sorted(r.params["seed"] for r in runs) == [0, 1, 2]


def test_shared_runs_are_one_run(real_plan):
    runs = plan.expand(real_plan, "smoke", "data", only=["lenet-baseline", "lenet-init-schemes"])
    seeds = real_plan["profiles"]["smoke"]["seeds"]
    shared = [r for r in runs if set(r.experiments) == {"lenet-baseline", "lenet-init-schemes"}]
    assert sorted(r.params["seed"] for r in shared) == seeds  # one shared run per seed
    assert set(shared[0].questions) >= {"lab1-g", "lab1-h"}
    assert len(runs) == 3 * len(seeds)  # default init shared, kaiming and xavier extra


def test_grid_times_seeds(real_plan):
    p = copy.deepcopy(real_plan)
    p["experiments"]["lenet-init-schemes"]["profiles"] = {"smoke": {"seeds": [0, 1]}}
    runs = plan.expand(p, "smoke", "data", only=["lenet-init-schemes"])
    assert len(runs) == 3 * 2
    assert {(r.params["init"], r.params["seed"]) for r in runs} == {
        (i, s) for i in ("default", "kaiming_normal", "xavier_normal") for s in (0, 1)}


def test_merge_order_profile_overrides_protocol(real_plan):
    smoke = plan.expand(real_plan, "smoke", "data", only=["lab1-g"])[0].params
    full = plan.expand(real_plan, "full", "data", only=["lab1-g"])[0].params
    proto = real_plan["protocols"]["lab1"]
    assert full["epochs"] == proto["params"]["epochs"]
    assert smoke["epochs"] == proto["profiles"]["smoke"]["epochs"]
    assert smoke["lr"] == full["lr"] == proto["params"]["lr"]


def test_only_accepts_questions_and_experiments_and_names_unknowns(real_plan):
    by_q = plan.expand(real_plan, "smoke", "data", only=["lab1-h"])
    by_e = plan.expand(real_plan, "smoke", "data", only=["lenet-init-schemes"])
    assert {r.key for r in by_q} == {r.key for r in by_e}
    with pytest.raises(plan.PlanError, match="--only lab9-z.*questions: .*lab1-g"):
        plan.expand(real_plan, "smoke", "data", only=["lab9-z"])


def _write(tmp_path, p):
    for nb in paths.EXPERIMENTS_DIR.glob("*.ipynb"):
        shutil.copy(nb, tmp_path / nb.name)
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["experiments"]["lenet-baseline"].update(params={"lr_typo": 0.1}),
     r"experiments\.lenet-baseline \(profile smoke\): unknown parameter\(s\) \['lr_typo'\]"),
    (lambda p: p["experiments"]["lenet-baseline"].update(params={"optimizer": "rmsprop"}),
     r"experiments\.lenet-baseline .*optimizer.*sgd.*adam"),
    (lambda p: p["experiments"]["lenet-baseline"].update(colour="red"),
     r"experiments\.lenet-baseline: unknown key\(s\) \['colour'\]"),
    (lambda p: p["experiments"]["lenet-baseline"].update(notebook="nope.ipynb"),
     r"experiments\.lenet-baseline\.notebook: .*nope\.ipynb does not exist"),
    (lambda p: p["experiments"]["lenet-baseline"].update(protocol="lab7"),
     r"experiments\.lenet-baseline\.protocol: unknown protocol 'lab7'"),
    (lambda p: p["experiments"]["lenet-baseline"].update(questions=[]),
     r"experiments\.lenet-baseline\.questions"),
    (lambda p: p["experiments"]["lenet-init-schemes"].update(grid={"init": "kaiming_normal"}),
     r"experiments\.lenet-init-schemes\.grid\.init: expected a non-empty list"),
    (lambda p: p["profiles"].pop("cpu"), r"plan\.profiles: must define exactly"),
    (lambda p: p["experiments"]["lenet-baseline"].update(profiles={"smok": {"epochs": 1}}),
     r"experiments\.lenet-baseline\.profiles: unknown profile\(s\) \['smok'\]"),
    (lambda p: p["protocols"]["lab1"]["profiles"].update(gpu={"epochs": 1}),
     r"protocols\.lab1\.profiles: unknown profile\(s\) \['gpu'\]"),
    (lambda p: p["experiments"]["lenet-baseline"].update(questions="lab1-g"),
     r"experiments\.lenet-baseline\.questions: .*got 'lab1-g'"),
    (lambda p: p["experiments"]["lenet-baseline"].update(seeds=[]),
     r"experiments\.lenet-baseline\.seeds: expected a non-empty list"),
    (lambda p: p["experiments"]["lenet-baseline"].update(params={"seed": 3}),
     r"experiments\.lenet-baseline\.params: 'seed' is set by the runner"),
    (lambda p: p["profiles"]["cpu"].pop("seeds"), r"profiles\.cpu\.seeds: expected"),
    (lambda p: p["experiments"]["resnet20"].update(exclusive="yes"),
     r"experiments\.resnet20\.exclusive: expected true or false, got 'yes'"),
    (lambda p: p["experiments"]["resnet20"].update(threads=0),
     r"experiments\.resnet20\.threads: expected a whole number of CPU threads >= 1"),
    (lambda p: p["experiments"]["resnet20"].update(threads="4"),
     r"experiments\.resnet20\.threads: .*got '4'"),
    (lambda p: p["experiments"]["resnet20"].update(threads=True),
     r"experiments\.resnet20\.threads: .*got True"),
    (lambda p: p.update(experiments=None), r"experiments: expected a mapping"),
    (lambda p: p.update(profiles=["smoke", "cpu", "full"]), r"profiles: expected a mapping"),
])
def test_invalid_entries_name_entry_and_key(tmp_path, real_plan, mutate, message):
    p = copy.deepcopy(real_plan)
    mutate(p)
    with pytest.raises(plan.PlanError, match=message):
        plan.load(_write(tmp_path, p))


def test_profile_resolution(monkeypatch):
    monkeypatch.setenv(paths.PROFILE_ENV, "smoke")
    assert plan.resolve_profile(None) == "smoke"
    assert plan.resolve_profile("full") == "full"
    monkeypatch.setenv(paths.PROFILE_ENV, "auto")
    assert plan.resolve_profile(None) in ("cpu", "full")
    with pytest.raises(plan.PlanError, match="profile must be one of"):
        plan.resolve_profile("fast")


def test_run_labels_name_what_sets_a_run_apart_on_any_profile(real_plan):
    labels = {r.label: r for r in plan.expand(real_plan, "smoke", "data")}
    assert len(labels) == len(plan.expand(real_plan, "smoke", "data"))  # one run, one name
    # A value the smoke profile plans alone is still named: lr 2.0 is what sets it apart.
    assert labels["lenet-bn-lr batch_norm=False lr=2.0 seed=0"].params["lr"] == 2.0
    # A run another experiment shares is named by its first one; the rest keep their axes.
    assert labels["lenet-bn batch_norm=True bn_noise=1.0 seed=0"].params["bn_noise"] == 1.0
    assert labels["resnet-pair model=plain20 seed=0"].params["model"] == "plain20"
    assert labels["lenet-adam-eps adam_eps=1.0 seed=0"].params["adam_eps"] == 1.0
    assert labels["lenet-l1 l1=0.0001 weight_decay=0.0 seed=1"].params["seed"] == 1


def test_key_depends_on_params_data_and_notebook_code(tmp_path):
    nb = paths.EXPERIMENTS_DIR / "train.ipynb"
    params = plan.expand(plan.load(), "smoke", "d", only=["lab1-g"])[0].params
    key = plan.run_key(nb, params, "d")
    assert plan.run_key(nb, params, "d") == key
    assert plan.run_key(nb, {**params, "lr": 0.02}, "d") != key
    assert plan.run_key(nb, params, "other-data") != key
    edited = tmp_path / "train.ipynb"
    text = nb.read_text().replace("progress=False", "progress=False ")
    edited.write_text(text)
    assert plan.run_key(edited, params, "d") != key


def test_key_covers_the_code_the_notebooks_run_and_not_the_books(tmp_path, monkeypatch):
    notebooks = sorted(paths.EXPERIMENTS_DIR.glob("*.ipynb"))
    for nb in notebooks:  # what a run saves, and how it reads another run back, is in
        assert {"artifacts", "train", "data", "paths"} <= set(plan.compute_modules(nb))
        assert not {"results", "plots", "book", "answers", "runner"} & set(
            plan.compute_modules(nb)), nb.name
    package = tmp_path / "analysis"
    shutil.copytree(plan.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(plan, "PACKAGE_DIR", package)

    def keys():
        return [plan.run_key(nb, {"lr": 0.1}, "d") for nb in notebooks]

    def edit(module, old, new):
        source = (package / f"{module}.py").read_text()
        assert old in source
        (package / f"{module}.py").write_text(source.replace(old, new))

    before = keys()
    edit("results", "def difference(", "def difference(  # restyled\n    ")  # the reading side
    edit("plots", "import math", "import math  # restyled")
    assert keys() == before
    # What a training run saves: every notebook imports it, directly or through another.
    edit("artifacts", 'write(run_dir, "metrics", metrics)',
         'write(run_dir, "metrics", metrics.round(4))')
    after = keys()
    assert all(a != b for a, b in zip(after, before, strict=True))
    # How the landscape notebook rebuilds the network it studies.
    edit("artifacts", "return model.eval()", "return model.eval().float()")
    assert all(a != b for a, b in zip(keys(), after, strict=True))
    # The C++ kernels LeNet-5 trains with: every notebook trains or rebuilds models.
    after = keys()
    kernels = package / "cpu_ops.cpp"
    kernels.write_text(kernels.read_text().replace("constexpr int64_t CHUNK = 8;",
                                                   "constexpr int64_t CHUNK = 4;"))
    assert all(a != b for a, b in zip(keys(), after, strict=True))


@pytest.mark.parametrize("code, modules", [
    ("from analysis import train as T", {"train"}),
    ("from analysis import (\n    data,\n    train,\n)", {"data", "train"}),
    ("from analysis.flops import count_macs", {"flops"}),
    ("import analysis.models as m", {"models"}),
    ("from .data import load_cifar10", {"data"}),
    ("%matplotlib inline\nfrom analysis import data", {"data"}),
    ("import numpy\nfrom analysisx import train", set()),
])
def test_every_import_spelling_reaches_the_key(code, modules):
    assert plan._imported_modules(code) == modules


def test_a_bare_package_import_counts_every_module():
    assert {"train", "data", "models", "flops"} <= plan._imported_modules("import analysis")


def test_exclusive_and_threads_schedule_runs_without_changing_their_keys(real_plan):
    before = plan.expand(real_plan, "cpu", "data", only=["lenet-baseline", "lenet-init-schemes"])
    p = copy.deepcopy(real_plan)
    p["experiments"]["lenet-init-schemes"].update(exclusive=True, threads=2)
    after = plan.expand(p, "cpu", "data", only=["lenet-baseline", "lenet-init-schemes"])
    assert [r.key for r in after] == [r.key for r in before]
    by_key = {r.key: r for r in after}
    for r in after:
        # The run both experiments share is scheduled for the one that asks more.
        assert (r.exclusive, r.threads) == (True, 2), r.experiments
        assert r.record()["exclusive"] is True and r.record()["threads"] == 2
        assert plan.Run(**r.record()) == by_key[r.key]  # the index's records round-trip
    plain = plan.expand(real_plan, "cpu", "data", only=["lenet-baseline"])[0]
    assert (plain.exclusive, plain.threads) == (False, None)


def test_latency_runs_are_exclusive(real_plan):
    runs = plan.expand(real_plan, "cpu", "data", only=["depthwise-latency"])
    assert runs and all(r.exclusive for r in runs)


def _run(name, notebook="train.ipynb", exclusive=False, **params):
    return plan.Run(key=name, notebook=notebook, params=params, exclusive=exclusive)


def test_expected_cost_counts_training_steps_and_evaluation():
    def cost(**params):
        return plan.expected_cost("train.ipynb", {"model": "lenet5", "val_size": 5000, **params})

    one, two, four = (cost(epochs=e, subset=600) for e in (1, 2, 4))
    assert four - one == pytest.approx(3 * (two - one))  # every epoch costs the same
    assert cost(epochs=0, subset=600) > 0  # a run without training still evaluates
    # No subset: the 45,000 training images left after the validation hold-out.
    assert plan.expected_work("train.ipynb", {"epochs": 2, "subset": None}).train == 90_000
    resnet = cost(model="resnet20", epochs=1, subset=600)
    assert resnet > 50 * one  # ResNet-20 needs about 60 times LeNet-5's MACs per image
    assert plan.expected_cost("costs.ipynb", {"epochs": 10}) == 0
    landscape = plan.expand(plan.load(), "cpu", "d", only=["landscape"])
    looks = [r for r in landscape if r.notebook == "landscape.ipynb"]
    assert looks and all(plan.expected_work(r.notebook, r.params).forward > 0 for r in looks)


def test_dispatch_order_is_exclusive_first_then_longest_first_stable():
    runs = [
        _run("lenet-a", model="lenet5", epochs=15, subset=20000),
        _run("init", model="lenet5", epochs=0, subset=20000),
        _run("latency", notebook="costs.ipynb", exclusive=True),
        _run("table", notebook="costs.ipynb"),
        _run("lenet-b", model="lenet5", epochs=15, subset=20000),
        _run("resnet", model="resnet20", epochs=8, subset=10000),
        _run("lenet-short", model="lenet5", epochs=2, subset=20000),
    ]
    order = [r.key for r in plan.dispatch_order(runs)]
    assert order == ["latency", "resnet", "lenet-a", "lenet-b", "lenet-short", "init", "table"]


# ---------------------------------------------------------------- runs that need runs

def _by_model(runs, experiment):
    return {r.params["model"]: r for r in runs if experiment in r.experiments}


def test_a_dependent_run_takes_the_key_of_the_run_it_needs_into_its_own(tmp_path):
    the_plan, path = dependency_plan(tmp_path)
    runs = plan.expand(plan.load(path), "smoke", "d", experiments_dir=tmp_path)
    pair, look = _by_model(runs, "pair"), _by_model(runs, "landscape")
    for model in ("a", "b"):
        assert look[model].params["trained_run"] == pair[model].key
        assert look[model].needs == [pair[model].key] and pair[model].needs == []
        assert look[model].record()["needs"] == [pair[model].key]
        assert plan.Run(**look[model].record()) == look[model]  # the index round-trips
    assert look["a"].label == "landscape model=a seed=0"  # the key it needs is no part of it
    # Retraining the needed runs differently gives the dependent runs new keys.
    the_plan["experiments"]["pair"]["params"] = {"value": 2}
    again = plan.expand(plan.load(write_plan(tmp_path, the_plan)), "smoke", "d",
                        experiments_dir=tmp_path)
    pair2, look2 = _by_model(again, "pair"), _by_model(again, "landscape")
    for model in ("a", "b"):
        assert pair2[model].key != pair[model].key
        assert look2[model].key != look[model].key
        assert look2[model].params == {**look[model].params, "trained_run": pair2[model].key}


def test_only_a_dependent_experiment_brings_the_runs_it_needs(tmp_path):
    the_plan, path = dependency_plan(tmp_path, models=["b"])
    the_plan = plan.load(path)
    runs = plan.expand(the_plan, "smoke", "d", only=["q-look"], experiments_dir=tmp_path)
    everything = plan.expand(the_plan, "smoke", "d", experiments_dir=tmp_path)
    pair = _by_model(everything, "pair")
    # Only the run it needs, not the whole experiment, recorded as that experiment's run.
    assert {r.key for r in runs} == {_by_model(runs, "landscape")["b"].key, pair["b"].key}
    needed = next(r for r in runs if r.key == pair["b"].key)
    assert (needed.experiments, needed.questions) == (["pair"], ["q-pair"])
    assert plan.with_needs([_by_model(everything, "landscape")["b"]], everything) == [
        pair["b"], _by_model(everything, "landscape")["b"]]
    # Asking for the needed experiment alone does not bring its dependents.
    alone = plan.expand(the_plan, "smoke", "d", only=["pair"], experiments_dir=tmp_path)
    assert {r.key for r in alone} == {pair["a"].key, pair["b"].key}


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["experiments"]["landscape"]["needs"].update(experiment="nope"),
     r"experiments\.landscape\.needs\.experiment: unknown experiment 'nope'; defined: pair"),
    (lambda p: p["experiments"]["landscape"]["needs"].update(experiment="landscape"),
     r"experiments\.landscape\.needs\.experiment: landscape cannot need its own runs"),
    (lambda p: p["experiments"]["pair"].update(
        needs={"experiment": "landscape", "match": ["model"]}),
     r"experiments\.pair\.needs: a cycle: pair needs landscape needs pair"),
    (lambda p: p["experiments"]["landscape"].update(needs="pair"),
     r"experiments\.landscape\.needs: expected a mapping with the keys experiment and match"),
    (lambda p: p["experiments"]["landscape"]["needs"].update(match=[]),
     r"experiments\.landscape\.needs\.match: expected a non-empty list"),
    (lambda p: p["experiments"]["landscape"]["needs"].update(match=["model", "colour"]),
     r"experiments\.landscape\.needs\.match: \['colour'\] not among the parameters of "
     r"landscape's runs"),
    (lambda p: p["experiments"]["landscape"]["grid"].update(model=["a", "c"]),
     r"experiments\.landscape\.needs: on profile smoke, the run with model=c seed=0 matches "
     r"0 runs of experiment pair, and must match exactly one: plan that run in pair"),
    (lambda p: p["experiments"]["landscape"]["needs"].update(match=["seed"]),
     r"on profile smoke, the run with seed=0 matches 2 runs of experiment pair.*add to match"),
    (lambda p: p["experiments"]["landscape"].update(notebook="make.ipynb"),
     r"experiments\.landscape\.needs: make\.ipynb does not declare 'trained_run': add "
     r"`trained_run = None`"),
    (lambda p: p["experiments"]["landscape"].update(params={"trained_run": "abc"}),
     r"experiments\.landscape \(profile smoke\): 'trained_run' is set by the runner"),
])
def test_invalid_needs_name_the_problem_and_the_fix(tmp_path, mutate, message):
    the_plan, _ = dependency_plan(tmp_path)
    mutate(the_plan)
    with pytest.raises(plan.PlanError, match=message):
        plan.load(write_plan(tmp_path, the_plan))


def test_dispatch_order_puts_a_needed_run_first_and_counts_what_waits_for_it():
    runs = [
        _run("look", notebook="costs.ipynb"),
        _run("fine-tune", model="lenet5", epochs=15, subset=20000),
        _run("latency", notebook="costs.ipynb", exclusive=True),
        _run("mid", model="lenet5", epochs=10, subset=20000),
        _run("pretrain", model="lenet5", epochs=2, subset=20000),
        _run("table", notebook="costs.ipynb"),
    ]
    needs = {"look": ["mid"], "fine-tune": ["pretrain"], "latency": ["table"]}
    for r in runs:
        r.needs = needs.get(r.key, [])
    # An exclusive run's needs run alone before it; a short run that a long one waits for
    # starts before a run longer than itself.
    assert plan.runs_alone(runs) == {"latency", "table"}
    order = [r.key for r in plan.dispatch_order(runs)]
    assert order == ["table", "latency", "pretrain", "fine-tune", "mid", "look"]
    runs[3].needs = ["look"]  # mid needs look needs mid
    with pytest.raises(plan.PlanError, match="runs that need each other"):
        plan.dispatch_order(runs)


def test_the_book_profile_comes_from_quarto_then_dlbook(monkeypatch):
    monkeypatch.delenv("QUARTO_PROFILE", raising=False)
    monkeypatch.setenv(paths.PROFILE_ENV, "smoke")
    assert plan.resolve_profile() == "smoke"
    monkeypatch.setenv("QUARTO_PROFILE", "html,cpu")  # quarto render --profile html,cpu
    assert plan.resolve_profile() == "cpu"
    monkeypatch.setenv("QUARTO_PROFILE", "html")  # no book profile in it: $DLBOOK_PROFILE
    assert plan.resolve_profile() == "smoke"
    assert plan.resolve_profile("full") == "full"  # an explicit --profile wins
