"""Read and validate the plan, expand it into runs, and give each run a content key.

The plan (experiments/plan.yaml) says which runs each question needs, per
profile. A run is one execution of one notebook with one set of parameters;
its key is a hash of everything that determines its result, so a finished run
can be reused by any experiment, question or profile that asks for it again.
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
# Injected by the runner into every notebook; not part of a run's identity.
RUNNER_PARAMS = ("run_dir", "data_dir")
# Modules whose code cannot change a run's numbers; editing them keeps runs valid.
PRESENTATION_MODULES = {"plots", "results", "book", "cli", "runner", "plan", "paths",
                        "answers"}
PACKAGE_DIR = Path(__file__).parent
EXPERIMENT_KEYS = {"notebook", "protocol", "questions", "params", "cases", "grid", "seeds",
                   "profiles", "description", "exclusive", "threads"}
# CIFAR-10's 50,000 training images; `val_size` of them are held out for validation.
CIFAR10_TRAIN = 50_000


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

    def record(self) -> dict:
        return {"key": self.key, "notebook": self.notebook, "params": self.params,
                "experiments": self.experiments, "questions": self.questions,
                "exclusive": self.exclusive, "threads": self.threads}


def resolve_profile(name: str | None = None) -> str:
    """smoke/cpu/full; `auto` (the default) is full when CUDA is available, else cpu."""
    name = name or os.environ.get(paths.PROFILE_ENV) or "auto"
    if name == "auto":
        import torch

        return "full" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise PlanError(f"profile must be one of {PROFILES + ('auto',)}, got {name!r} "
                        f"(from --profile or ${paths.PROFILE_ENV})")
    return name


def load(path: Path = paths.PLAN_FILE) -> dict:
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
    """The analysis modules a notebook's results depend on (transitively), presentation excluded."""
    return _compute_modules(_code_source(nb_path))


def _compute_modules(code: str) -> list[str]:
    todo = _imported_modules(code)
    seen = set()
    while todo:
        name = todo.pop()
        source = PACKAGE_DIR / f"{name}.py"
        if name in seen or name in PRESENTATION_MODULES or not source.exists():
            continue
        seen.add(name)
        todo |= _imported_modules(source.read_text())
    return sorted(seen)


def code_fingerprint(nb_path: Path) -> dict:
    code = _code_source(nb_path)
    files = {m: hashlib.sha256((PACKAGE_DIR / f"{m}.py").read_bytes()).hexdigest()
             for m in _compute_modules(code)}
    return {"notebook": hashlib.sha256(code.encode()).hexdigest(), "modules": files}


def run_key(nb_path: Path, params: dict, data_fingerprint: str, code: dict | None = None) -> str:
    """Content hash of what determines a run's result: notebook code, parameters,
    the compute modules it imports, and the data it reads. `code` is the notebook's
    `code_fingerprint`, when the caller already has it."""
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

def _split_override(override: dict) -> tuple[dict, dict | None, list | None]:
    override = dict(override or {})
    grid = override.pop("grid", None)
    seeds = override.pop("seeds", None)
    return override, grid, seeds


def _expand_experiment(plan: dict, name: str, profile: str,
                       experiments_dir: Path = paths.EXPERIMENTS_DIR) -> list[dict]:
    """Every parameter set one experiment needs on one profile (see plan.yaml's header)."""
    exp = plan["experiments"][name]
    protocol = (plan.get("protocols") or {}).get(exp.get("protocol")) or {}
    params = {k: v for k, v in notebook_parameters(experiments_dir / exp["notebook"]).items()
              if k not in RUNNER_PARAMS}
    params.update(protocol.get("params") or {})
    proto_over, _, proto_seeds = _split_override((protocol.get("profiles") or {}).get(profile))
    params.update(proto_over)
    params.update(exp.get("params") or {})
    exp_over, grid, seeds = _split_override((exp.get("profiles") or {}).get(profile))
    params.update(exp_over)
    grid = grid if grid is not None else (exp.get("grid") or {})
    seeds = seeds or exp.get("seeds") or proto_seeds or plan["profiles"][profile]["seeds"]
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise PlanError(f"experiments.{name}.grid.{axis}: expected a non-empty list")
    cases = exp.get("cases") or [{}]
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
    """The runs a profile needs, deduplicated by key (a run two questions share runs once)."""
    selected = select(plan, only)
    runs: dict[str, Run] = {}
    code: dict[str, dict] = {}  # per notebook: read it and hash its modules once
    for name in selected:
        exp = plan["experiments"][name]
        nb_path = experiments_dir / exp["notebook"]
        if exp["notebook"] not in code:
            code[exp["notebook"]] = code_fingerprint(nb_path)
        for params in _expand_experiment(plan, name, profile, experiments_dir):
            key = run_key(nb_path, params, data_fingerprint, code[exp["notebook"]])
            run = runs.setdefault(key, Run(key, exp["notebook"], params))
            if name not in run.experiments:
                run.experiments.append(name)
            run.questions.extend(q for q in exp["questions"] if q not in run.questions)
            # A run two experiments share is scheduled for the more demanding one.
            run.exclusive = run.exclusive or exp.get("exclusive", False)
            if exp.get("threads"):
                run.threads = max(run.threads or 0, exp["threads"])
    return list(runs.values())


# ---------------------------------------------------------------- scheduling

def expected_cost(notebook: str, params: dict) -> float:
    """A run's expected compute in multiply-accumulates, to start the longest runs first.

    Training: epochs x training images x the model's MACs per image (the backward pass
    and evaluation scale with these too, so the constant factors do not change the
    order). A 0-epoch run still evaluates its model: it counts as a fifth of an epoch.
    Other notebooks (cost tables, latency) take seconds: 0.
    """
    if notebook != "train.ipynb":
        return 0.0
    available = CIFAR10_TRAIN - params.get("val_size", 5000)
    images = min(params.get("subset") or available, available)
    epochs = max(params.get("epochs", 0), 0.2)
    return epochs * images * _macs_per_image(params.get("model", "lenet5"))


@functools.cache
def _macs_per_image(model: str) -> int:
    from analysis import flops, models

    return flops.totals(models.build_model(model), (3, 32, 32))["macs"]


def labels(runs: list[Run]) -> dict[str, str]:
    """A short name per run key: its first experiment and the parameters that set it
    apart from that experiment's other runs, e.g. 'lenet-bn-lr lr=0.5 batch_norm=True
    seed=2' (what `dlbook status` and the run log show)."""
    by_experiment: dict[str, list[Run]] = {}
    for run in runs:
        by_experiment.setdefault(run.experiments[0], []).append(run)
    names = {}
    for experiment, members in by_experiment.items():
        varying = [k for k in members[0].params if k != "seed"
                   and len({json.dumps(m.params.get(k), sort_keys=True) for m in members}) > 1]
        for run in members:
            parts = [f"{k}={run.params.get(k)}" for k in varying]
            names[run.key] = " ".join([experiment, *parts, f"seed={run.params.get('seed')}"])
    return names


def dispatch_order(runs: list[Run]) -> list[Run]:
    """The order a batch starts its runs in: exclusive runs first, in plan order (the
    runner runs them one at a time before the rest), then the others longest first, so
    that no long run starts last while the other jobs sit idle; ties keep plan order."""
    exclusive = [r for r in runs if r.exclusive]
    shared = [r for r in runs if not r.exclusive]
    return exclusive + sorted(shared, key=lambda r: -expected_cost(r.notebook, r.params))


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
