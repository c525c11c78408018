"""Read and validate the plan, expand it into runs, and give each run a content key.

The plan (experiments/plan.yaml) says which runs each question needs, per
profile. A run is one execution of one notebook with one set of parameters;
its key is a hash of everything that determines its result, so a finished run
can be reused by any experiment, question or profile that asks for it again.

An experiment may need another's stored results (a loss landscape needs a trained model):

    needs: {experiment: resnet-pair, match: [model, seed]}

Each of its runs needs the one run of `resnet-pair` (same profile) whose parameters equal
its own on every name in `match`. Expansion sets the dependent run's parameter
`trained_run` (which its notebook declares as `trained_run = None`) to that run's key, so
the dependent's key changes whenever the needed run's does, and the notebook finds the
needed run's files in `Path(results_dir) / "runs" / trained_run`. The runner starts a run
only once every run it needs is finished (see runner.py).
"""
import ast
import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

from analysis import paths

PROFILES = ("smoke", "cpu", "full")
# Injected by the runner into every notebook; not part of a run's identity. `results_dir`
# is the results root, where a run that needs another finds it (runs/<trained_run>).
RUNNER_PARAMS = ("run_dir", "data_dir", "results_dir")
# The parameter a run that `needs` another gets: the key of the run it needs.
TRAINED_RUN = "trained_run"
PACKAGE_DIR = Path(__file__).parent
EXPERIMENT_KEYS = {"notebook", "protocol", "questions", "params", "cases", "grid", "seeds",
                   "profiles", "description", "exclusive", "threads", "needs"}
NEEDS_EXAMPLE = "e.g. needs: {experiment: resnet-pair, match: [model, seed]}"
# CIFAR-10's 50,000 training images (`val_size` of them are held out for validation) and
# 10,000 test images.
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000


class PlanError(ValueError):
    """The plan is invalid; the message names the entry and the key."""


@dataclass
class Run:
    key: str
    notebook: str
    params: dict
    experiments: list = field(default_factory=list)
    questions: list = field(default_factory=list)
    # Scheduling, not identity (the key ignores them): run with nothing else running, and
    # with this many CPU threads (None: the runner decides).
    exclusive: bool = False
    threads: int | None = None
    # The keys of the runs this one needs (`needs` in the plan): it starts after them.
    needs: list = field(default_factory=list)
    # What `dlbook status` and the run log call it: its first experiment and the parameters
    # that set it apart from that experiment's other runs (see `label`).
    label: str = ""

    def record(self) -> dict:
        return {"key": self.key, "notebook": self.notebook, "params": self.params,
                "experiments": self.experiments, "questions": self.questions,
                "exclusive": self.exclusive, "threads": self.threads, "needs": self.needs,
                "label": self.label}

    @property
    def name(self) -> str:
        """Its label, or for a run made by hand, its key."""
        return self.label or self.key


def quarto_profile() -> str | None:
    """The book profile Quarto was asked for: `quarto render --profile cpu` (or
    QUARTO_PROFILE=cpu) sets QUARTO_PROFILE, which may list other Quarto profiles too
    ("html,cpu"); the first of smoke/cpu/full/auto in it, else None."""
    listed = os.environ.get("QUARTO_PROFILE", "").replace(",", " ").split()
    return next((p for p in listed if p in (*PROFILES, "auto")), None)


def resolve_profile(name: str | None = None) -> str:
    """smoke/cpu/full; `auto` (the default) is full when CUDA is available, else cpu.
    Without `name`: Quarto's profile (`quarto render --profile cpu`), else $DLBOOK_PROFILE,
    so that `quarto render --profile cpu` and `DLBOOK_PROFILE=cpu quarto render` build the
    same book (the pre-render's `dlbook run` and the chapters both resolve it here)."""
    name = name or quarto_profile() or os.environ.get(paths.PROFILE_ENV) or "auto"
    if name == "auto":
        import torch

        return "full" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise PlanError(f"profile must be one of {PROFILES + ('auto',)}, got {name!r} "
                        f"(from --profile or ${paths.PROFILE_ENV})")
    return name


def load(path: Path = paths.PROJECT_ROOT / paths.PLAN_FILE) -> dict:
    """Parse and validate the plan; raise PlanError naming the entry and key."""
    try:
        plan = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise PlanError(f"{path}: not valid YAML: {e}") from e
    validate(plan, Path(path).parent)
    return plan


# ---------------------------------------------------------------- notebooks

def notebook_parameters(nb_path: Path) -> dict:
    """The names and default values assigned in the cell tagged `parameters`."""
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            values = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
            return values
    raise PlanError(f"{nb_path}: no cell tagged 'parameters'")


def _code_source(nb_path: Path) -> str:
    """The code cells only, joined: executing or clearing a notebook keeps its key."""
    nb = nbformat.read(nb_path, as_version=4)
    return "\n# ---\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _imported_modules(source: str) -> set[str]:
    """The `analysis` modules `source` imports, in any spelling Python accepts.

    A bare `import analysis` could reach any module as an attribute, so it counts as
    importing all of them: a key that misses a module would serve stale results.
    """
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line  # IPython magics
                     for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise PlanError(f"cannot read the imports of code with a syntax error: {e}") from e
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "analysis":
                    names.update(parts[1:2] or _all_modules())
        elif isinstance(node, ast.ImportFrom):
            package = node.module or ""
            if node.level == 0 and package.split(".")[0] != "analysis":
                continue
            inner = package.split(".")[1:2] if node.level == 0 else package.split(".")[:1]
            if inner and inner[0]:
                names.add(inner[0])  # from analysis.train import x / from .train import x
            else:
                names.update(alias.name for alias in node.names)  # from analysis import train
    return names


def _all_modules() -> set[str]:
    return {p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__"}


def compute_modules(nb_path: Path) -> list[str]:
    """The analysis modules a notebook imports, directly or through one another: the code
    that runs inside its runs, all of it part of their keys (no list of modules to keep)."""
    return _compute_modules(_code_source(nb_path))


def _compute_modules(code: str) -> list[str]:
    todo = _imported_modules(code)
    seen = set()
    while todo:
        name = todo.pop()
        source = PACKAGE_DIR / f"{name}.py"
        if name in seen or not source.exists():
            continue
        seen.add(name)
        todo |= _imported_modules(source.read_text())
    return sorted(seen)


def code_fingerprint(nb_path: Path) -> dict:
    """Hashes of a notebook's code and of the modules it runs, with the C++ source a module
    compiles (`cpu_ops.cpp` beside `cpu_ops.py`)."""
    code = _code_source(nb_path)
    files = {}
    for m in _compute_modules(code):
        for source in (PACKAGE_DIR / f"{m}.py", PACKAGE_DIR / f"{m}.cpp"):
            if source.exists():
                files[source.name] = hashlib.sha256(source.read_bytes()).hexdigest()
    return {"notebook": hashlib.sha256(code.encode()).hexdigest(), "modules": files}


def run_key(nb_path: Path, params: dict, data_fingerprint: str, code: dict | None = None) -> str:
    """Content hash of what determines a run's result: notebook code, parameters, the
    analysis modules it imports (`compute_modules`), and the data it reads. `code` is the
    notebook's `code_fingerprint`, when the caller already has it."""
    blob = json.dumps({"code": code or code_fingerprint(nb_path), "params": params,
                       "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- validation

def _check_mapping(value, where: str):
    if not isinstance(value, dict):
        raise PlanError(f"{where}: expected a mapping, got {type(value).__name__}")


def validate(plan, experiments_dir: Path = paths.EXPERIMENTS_DIR) -> None:
    _check_mapping(plan, "plan")
    for top in ("profiles", "experiments"):
        if top not in plan:
            raise PlanError(f"plan: missing top-level key {top!r}")
    unknown = set(plan) - {"profiles", "protocols", "experiments"}
    if unknown:
        raise PlanError(f"plan: unknown top-level key(s) {sorted(unknown)}; "
                        "allowed: profiles, protocols, experiments")
    _check_mapping(plan["profiles"], "profiles")
    if set(plan["profiles"]) != set(PROFILES):
        raise PlanError(f"plan.profiles: must define exactly {PROFILES}, "
                        f"got {sorted(plan['profiles'])}")
    for profile, spec in plan["profiles"].items():
        _check_mapping(spec, f"profiles.{profile}")
        _check_seeds(spec.get("seeds"), f"profiles.{profile}.seeds")
    protocols = plan.get("protocols") or {}
    _check_mapping(protocols, "protocols")
    _check_mapping(plan["experiments"], "experiments")
    for name, proto in protocols.items():
        _check_mapping(proto, f"protocols.{name}")
        _check_overrides(proto, f"protocols.{name}")
    for name, exp in plan["experiments"].items():
        where = f"experiments.{name}"
        _check_mapping(exp, where)
        _check_overrides(exp, where)
        bad = set(exp) - EXPERIMENT_KEYS
        if bad:
            raise PlanError(f"{where}: unknown key(s) {sorted(bad)}; "
                            f"allowed: {sorted(EXPERIMENT_KEYS)}")
        if "notebook" not in exp:
            raise PlanError(f"{where}: missing key 'notebook'")
        _check_scheduling(exp, where)
        nb_path = experiments_dir / exp["notebook"]
        if not nb_path.exists():
            raise PlanError(f"{where}.notebook: {nb_path} does not exist")
        if exp.get("protocol") is not None and exp["protocol"] not in protocols:
            raise PlanError(f"{where}.protocol: unknown protocol {exp['protocol']!r}; "
                            f"defined: {sorted(protocols)}")
        questions = exp.get("questions")
        if not (isinstance(questions, list) and questions
                and all(isinstance(q, str) for q in questions)):
            raise PlanError(f"{where}.questions: list the question ids this experiment "
                            f"answers, e.g. [lab1-g]; got {questions!r}")
        declared = notebook_parameters(nb_path)
        for profile in PROFILES:
            try:
                runs = _expand_experiment(plan, name, profile, experiments_dir)
            except PlanError:
                raise
            except (TypeError, ValueError) as e:
                raise PlanError(f"{where} (profile {profile}): {e}") from e
            for params in runs:
                _validate_params(exp["notebook"], params, f"{where} (profile {profile})",
                                 declared)
    # Once every experiment is valid on its own: a need names one of them.
    for name, exp in plan["experiments"].items():
        if "needs" in exp:
            _check_needs(plan, name, experiments_dir)


def _check_scheduling(exp: dict, where: str) -> None:
    if not isinstance(exp.get("exclusive", False), bool):
        raise PlanError(f"{where}.exclusive: expected true or false, got {exp['exclusive']!r}")
    threads = exp.get("threads")
    if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool)
                                    and threads >= 1):
        raise PlanError(f"{where}.threads: expected a whole number of CPU threads >= 1 (e.g. "
                        f"threads: 4), or no `threads` to let the runner choose; got {threads!r}")


def _check_seeds(seeds, where: str) -> None:
    if not (isinstance(seeds, list) and seeds
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)):
        raise PlanError(f"{where}: expected a non-empty list of seeds (integers >= 0), "
                        f"e.g. [0, 1, 2]; got {seeds!r}")


def _check_overrides(entry: dict, where: str) -> None:
    """Per-profile overrides name real profiles, seeds are lists, and `seed` is not a
    parameter (the runner sets it from `seeds`, so a fixed one would be overridden)."""
    overrides = entry.get("profiles") or {}
    _check_mapping(overrides, f"{where}.profiles")
    unknown = sorted(set(overrides) - set(PROFILES))
    if unknown:
        raise PlanError(f"{where}.profiles: unknown profile(s) {unknown}; allowed: "
                        f"{', '.join(PROFILES)}")
    for scope, values in [("", entry.get("params")),
                          *((f".profiles.{p}", o) for p, o in overrides.items())]:
        _check_mapping(values or {}, f"{where}{scope or '.params'}")
        if "seed" in (values or {}):
            raise PlanError(f"{where}{scope or '.params'}: 'seed' is set by the runner from "
                            "'seeds'; write seeds: [N] instead")
        if "seeds" in (values or {}):
            _check_seeds(values["seeds"], f"{where}{scope}.seeds")
    if "seeds" in entry:
        _check_seeds(entry["seeds"], f"{where}.seeds")


def _check_needs(plan: dict, name: str, experiments_dir: Path) -> None:
    """`needs` names another experiment and parameters both have, the notebook takes the
    needed run's key, the needs form no cycle, and every run matches exactly one run."""
    experiments = plan["experiments"]
    exp, where = experiments[name], f"experiments.{name}.needs"
    needs = exp["needs"]
    if not (isinstance(needs, dict) and set(needs) == {"experiment", "match"}):
        raise PlanError(f"{where}: expected a mapping with the keys experiment and match "
                        f"({NEEDS_EXAMPLE}); got {needs!r}")
    other, match = needs["experiment"], needs["match"]
    if other == name:
        raise PlanError(f"{where}.experiment: {name} cannot need its own runs; "
                        "name the experiment whose runs it reads")
    if not isinstance(other, str) or other not in experiments:
        raise PlanError(f"{where}.experiment: unknown experiment {other!r}; "
                        f"defined: {', '.join(experiments)}")
    if not (isinstance(match, list) and match and all(isinstance(m, str) for m in match)
            and TRAINED_RUN not in match):
        raise PlanError(f"{where}.match: expected a non-empty list of the parameter names "
                        f"whose values pick the needed run ({NEEDS_EXAMPLE}); got {match!r}")
    _needed_first(plan, [name])  # a cycle of needs fails here
    declared = notebook_parameters(experiments_dir / exp["notebook"])
    if TRAINED_RUN not in declared:
        raise PlanError(f"{where}: {exp['notebook']} does not declare {TRAINED_RUN!r}: add "
                        f"`{TRAINED_RUN} = None` to its parameters cell; the runner sets it to "
                        "the key of the run it needs, whose files the notebook reads from "
                        f"Path(results_dir) / 'runs' / {TRAINED_RUN}")
    for profile in PROFILES:
        mine = _expand_experiment(plan, name, profile, experiments_dir)
        theirs = _expand_experiment(plan, other, profile, experiments_dir)
        for experiment, runs in ((name, mine), (other, theirs)):
            for params in runs:
                absent = [m for m in match if m not in params]
                if absent:
                    both = sorted(set(mine[0]) & set(theirs[0]) - {TRAINED_RUN})
                    raise PlanError(
                        f"{where}.match: {absent} not among the parameters of {experiment}'s "
                        f"runs (profile {profile}); match names parameters the runs of both "
                        f"experiments have: {both}")
        for params in mine:
            if params[TRAINED_RUN] != declared[TRAINED_RUN]:
                raise PlanError(f"experiments.{name} (profile {profile}): {TRAINED_RUN!r} is "
                                "set by the runner from `needs` (the key of the run it needs); "
                                "remove it from the plan")
            _the_match(name, needs, profile, params, theirs)


def _needed_experiment(experiments: dict, name: str) -> str | None:
    """The experiment `name` needs, if it names one that exists (else None)."""
    needs = experiments[name].get("needs")
    other = needs.get("experiment") if isinstance(needs, dict) else None
    return other if isinstance(other, str) and other in experiments else None


def _the_match(name: str, needs: dict, profile: str, params: dict, candidates: list) -> int:
    """The index of the one run among `candidates` (the needed experiment's parameter sets)
    that a run of `name` with `params` needs; PlanError unless exactly one matches."""
    match = needs["match"]
    hits = [i for i, c in enumerate(candidates)
            if all(_same(c.get(m), params.get(m)) for m in match)]
    if len(hits) == 1:
        return hits[0]
    values = " ".join(f"{m}={params.get(m)}" for m in match)
    fix = (f"plan that run in {needs['experiment']} (its grid, cases or seeds), or match on "
           "fewer parameters" if not hits else
           "add to match a parameter whose values tell those runs apart")
    raise PlanError(f"experiments.{name}.needs: on profile {profile}, the run with {values} "
                    f"matches {len(hits)} runs of experiment {needs['experiment']}, and must "
                    f"match exactly one: {fix}")


def _same(a, b) -> bool:
    """Equal as the plan wrote them: 1 and 1.0, or 1 and True, are different parameters."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _validate_params(notebook: str, params: dict, where: str, declared: dict) -> None:
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise PlanError(f"{where}: unknown parameter(s) {unknown} for {notebook}; "
                        f"it declares: {sorted(k for k in declared if k not in RUNNER_PARAMS)}")
    if notebook == "train.ipynb":
        from analysis import train

        try:
            train.validate_config({k: v for k, v in params.items() if k in train.DEFAULTS})
        except ValueError as e:
            raise PlanError(f"{where}: {e}") from e


# ---------------------------------------------------------------- expansion

def _split_override(override: dict) -> tuple[dict, dict | None, list | None, list | None]:
    override = dict(override or {})
    grid = override.pop("grid", None)
    seeds = override.pop("seeds", None)
    cases = override.pop("cases", None)
    return override, grid, seeds, cases


def _expand_experiment(plan: dict, name: str, profile: str,
                       experiments_dir: Path = paths.EXPERIMENTS_DIR) -> list[dict]:
    """Every parameter set one experiment needs on one profile (see plan.yaml's header)."""
    exp = plan["experiments"][name]
    protocol = (plan.get("protocols") or {}).get(exp.get("protocol")) or {}
    params = {k: v for k, v in notebook_parameters(experiments_dir / exp["notebook"]).items()
              if k not in RUNNER_PARAMS}
    params.update(protocol.get("params") or {})
    proto_over, _, proto_seeds, _ = _split_override((protocol.get("profiles") or {}).get(profile))
    params.update(proto_over)
    params.update(exp.get("params") or {})
    exp_over, grid, seeds, profile_cases = _split_override(
        (exp.get("profiles") or {}).get(profile))
    params.update(exp_over)
    grid = grid if grid is not None else (exp.get("grid") or {})
    seeds = seeds or exp.get("seeds") or proto_seeds or plan["profiles"][profile]["seeds"]
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise PlanError(f"experiments.{name}.grid.{axis}: expected a non-empty list")
    cases = profile_cases or exp.get("cases") or [{}]
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise PlanError(f"experiments.{name}.cases: expected a list of parameter mappings")
    runs = []
    for case in cases:
        for point in itertools.product(*grid.values()):
            for seed in seeds:
                runs.append({**params, **case, **dict(zip(grid, point, strict=True)),
                             "seed": seed})
    return runs


def expand(plan: dict, profile: str, data_fingerprint: str, only: list[str] | None = None,
           experiments_dir: Path = paths.EXPERIMENTS_DIR) -> list[Run]:
    """The runs a profile needs, deduplicated by key (a run two questions share runs once).

    With `only`, the selected experiments' runs and the runs they need (`needs`), which are
    expanded as part of their own experiments."""
    selected = select(plan, only)
    runs: dict[str, Run] = {}
    code: dict[str, dict] = {}  # per notebook: read it and hash its modules once
    expanded: dict[str, list[tuple[dict, str]]] = {}  # experiment -> (params, key) per run
    for name in _needed_first(plan, selected):
        exp = plan["experiments"][name]
        nb_path = experiments_dir / exp["notebook"]
        if exp["notebook"] not in code:
            code[exp["notebook"]] = code_fingerprint(nb_path)
        needs = exp.get("needs")
        expanded[name] = []
        for params in _expand_experiment(plan, name, profile, experiments_dir):
            if needs:  # the needed run's key is a parameter: its changes change this key
                theirs = expanded[needs["experiment"]]
                i = _the_match(name, needs, profile, params, [p for p, _ in theirs])
                params[TRAINED_RUN] = theirs[i][1]
            key = run_key(nb_path, params, data_fingerprint, code[exp["notebook"]])
            expanded[name].append((params, key))
            run = runs.setdefault(key, Run(key, exp["notebook"], params,
                                           needs=[params[TRAINED_RUN]] if needs else [],
                                           label=label(name, exp, params)))
            if name not in run.experiments:
                run.experiments.append(name)
            run.questions.extend(q for q in exp["questions"] if q not in run.questions)
            # A run two experiments share is scheduled for the more demanding one.
            run.exclusive = run.exclusive or exp.get("exclusive", False)
            if exp.get("threads"):
                run.threads = max(run.threads or 0, exp["threads"])
    chosen = [r for r in runs.values() if set(r.experiments) & set(selected)]
    return with_needs(chosen, list(runs.values()))


def label(name: str, exp: dict, params: dict) -> str:
    """A run's name, e.g. 'lenet-bn-lr batch_norm=True lr=0.5 seed=2': experiment `name`
    (its entry `exp`) and the run's values of what the experiment varies on any profile
    (its grid's axes, its cases' keys), even where a profile plans one value of it."""
    axes = [*(exp.get("grid") or {}),
            *(a for o in (exp.get("profiles") or {}).values() for a in (o or {}).get("grid") or {}),
            *(k for case in exp.get("cases") or [] for k in case)]
    shown = [a for a in dict.fromkeys(axes) if a in params and a != TRAINED_RUN]
    return " ".join([name, *(f"{a}={params[a]}" for a in shown), f"seed={params.get('seed')}"])


def _needed_first(plan: dict, names: list[str]) -> list[str]:
    """`names` and the experiments they need (transitively), each after those it needs."""
    def needs(name: str) -> list[str]:
        other = _needed_experiment(plan["experiments"], name)
        return [] if other is None else [other]

    def cycle(path: tuple) -> PlanError:
        return PlanError(f"experiments.{path[-1]}.needs: a cycle: {' needs '.join(path)}; a "
                         "run cannot start before the runs it needs, so one of these needs "
                         "must go")

    return _after_needs(names, needs, cycle)


def _after_needs(items: list[str], needs, cycle) -> list[str]:
    """`items` and what they need (`needs(item)`: a list), each after what it needs, in
    the order of `items` otherwise; `cycle(path)` is the PlanError for items that need
    each other, `path` the chain from the first of them back to it."""
    out: list[str] = []

    def place(item: str, path: tuple) -> None:
        if item in path:
            raise cycle((*path[path.index(item):], item))
        if item in out:
            return
        for other in needs(item):
            place(other, (*path, item))
        out.append(item)

    for item in items:
        place(item, ())
    return out


def with_needs(selected: list[Run], runs: list[Run]) -> list[Run]:
    """`selected` and the runs they need (transitively) among `runs`, in the order of `runs`:
    a batch of the selected runs trains what they need first (or finds it cached)."""
    by_key = {r.key: r for r in runs}
    wanted, todo = set(), [r.key for r in selected]
    while todo:
        key = todo.pop()
        if key not in wanted and key in by_key:
            wanted.add(key)
            todo += by_key[key].needs
    return [r for r in runs if r.key in wanted]


# ---------------------------------------------------------------- scheduling

@dataclass(frozen=True)
class Work:
    """What a run computes, in images through its model: `train` images through a training
    step (forward and backward), `forward` images through the forward pass alone."""
    model: str
    train: float
    forward: float


def expected_work(notebook: str, params: dict) -> Work | None:
    """What a run of `notebook` with `params` computes; None for the notebooks whose time
    the model's size does not tell (the latency tables, the digits)."""
    if notebook == "train.ipynb":
        from analysis import train

        p = {**train.DEFAULTS, **params}
        val = p["val_size"]
        images = min(p["subset"] or CIFAR10_TRAIN - val, CIFAR10_TRAIN - val)
        # Every epoch trains on `images`, then evaluates the validation split and as many
        # training images; before, the validation split; after, the test set, with the
        # final weights and the best ones.
        forward = val + p["epochs"] * (val + min(val, images)) + 2 * CIFAR10_TEST
        return Work(p["model"], p["epochs"] * images, forward)
    if notebook == "landscape.ipynb":
        subset = params["subset"]
        # Every point of the slice and the surface, the two ends, batch-norm statistics; a
        # Hessian-vector product costs about two training steps, at two points.
        points = params["points_1d"] + params["points_2d"] ** 2 + 3
        hessian = 2 * 2 * params["hessian_iters"] * (params["hessian_subset"] or subset)
        return Work(params["model"], hessian, points * subset)
    return None


def expected_cost(notebook: str, params: dict) -> float:
    """A run's expected compute in multiply-accumulates (`expected_work` at the model's MACs
    per image, a training step counted as three forward passes), to start the longest runs
    first; 0 for the notebooks without an expected work, which take seconds."""
    work = expected_work(notebook, params)
    if work is None:
        return 0.0
    return (3 * work.train + work.forward) * _macs_per_image(work.model)


@functools.cache
def _macs_per_image(model: str) -> int:
    from analysis import flops, models

    return flops.totals(models.build_model(model), (3, 32, 32))["macs"]


def dispatch_order(runs: list[Run]) -> list[Run]:
    """The order a batch starts its runs in: exclusive runs first, in plan order (the
    runner runs them one at a time before the rest, together with the runs they need),
    then the others longest first, so that no long run starts last while the other jobs
    sit idle; ties keep plan order. A run never comes after a run that needs it, and its
    length counts the longest chain of runs waiting for it, which it holds up."""
    _needs_first(runs)  # a cycle fails here, before any run starts
    alone = runs_alone(runs)
    chain = _chain_costs(runs)
    first = [r for r in runs if r.key in alone]
    rest = sorted((r for r in runs if r.key not in alone), key=lambda r: -chain[r.key])
    return _needs_first(first) + _needs_first(rest)


def runs_alone(runs: list[Run]) -> set[str]:
    """The keys of the runs a batch runs one at a time before the others: the exclusive
    runs, and the runs they need (which must be finished before them)."""
    return {r.key for r in with_needs([r for r in runs if r.exclusive], runs)}


def _needs_first(ordered: list[Run]) -> list[Run]:
    """`ordered`, with each run moved after the runs among them it needs; stable otherwise."""
    by_key = {r.key: r for r in ordered}

    def cycle(path: tuple) -> PlanError:
        return PlanError(f"runs that need each other: {' needs '.join(path)}")

    keys = _after_needs(list(by_key), lambda k: [n for n in by_key[k].needs if n in by_key],
                        cycle)
    return [by_key[k] for k in keys]


def _chain_costs(runs: list[Run]) -> dict[str, float]:
    """Per run key: the run's expected cost plus that of the longest chain of runs that
    wait for it (without needs: its own cost)."""
    waiting: dict[str, list[Run]] = {}
    for run in runs:
        for key in run.needs:
            waiting.setdefault(key, []).append(run)
    chain: dict[str, float] = {}

    def cost(run: Run) -> float:
        if run.key not in chain:
            chain[run.key] = expected_cost(run.notebook, run.params) + max(
                (cost(r) for r in waiting.get(run.key, ())), default=0.0)
        return chain[run.key]

    for run in runs:
        cost(run)
    return chain


def select(plan: dict, only: list[str] | None) -> list[str]:
    """Experiment names matching --only items (experiment names or question ids)."""
    names = list(plan["experiments"])
    if not only:
        return names
    chosen = []
    for item in only:
        hits = [n for n in names if n == item or item in plan["experiments"][n]["questions"]]
        if not hits:
            questions = sorted({q for e in plan["experiments"].values() for q in e["questions"]})
            raise PlanError(f"--only {item}: no experiment or question of that name; "
                            f"questions: {', '.join(questions)}; experiments: {', '.join(names)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen
