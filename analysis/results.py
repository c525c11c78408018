"""The book's reading side of the results: tidy DataFrames of what the runs wrote (the
writing side, which runs import, is analysis.artifacts), and how the book judges them:
differences over seeds (`difference`, `Verdict`), intervals, final accuracy, failed runs.

Layout under the results folder (see analysis.paths.results_dir):

    runs/<key>/            one finished (or failed) run, made visible by an atomic rename
        params.json        notebook, parameters, experiments and questions that asked for it
        status.json        finished | diverged | failed, error, times, host, device, versions
        notebook.ipynb     the executed notebook: a readable record of the run
        <name>.csv/.json   whatever the notebook wrote with `artifacts.write` (metrics, ...)
    index/<profile>.json   the runs the plan needs for that profile (written by the runner)

Chapters call `runs(...)` and `table(...)`; the profile comes from Quarto's profile or
$DLBOOK_PROFILE (`plan.resolve_profile`).
"""
import dataclasses
import enum
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import paths

# The write side runs inside the experiment notebooks, and is part of their runs' keys.
from analysis.artifacts import (  # noqa: F401 - the chapters read these from here too
    EPOCH_COLUMNS,
    ResultsMissing,
    checkpoint_epochs,
    load_checkpoint,
    load_weights,
    read_json,
    run_dir,
    save_training,
    trained_model,
    write,
)

DONE = ("finished", "diverged")
NOISE_LEVEL = 0.95  # the confidence level of every interval in the book
# Columns `runs` takes from each run's status.json: facts about the run, not parameters.
STATUS_COLUMNS = ("device", "host", "seconds", "error", "data_official")


# A run whose best validation accuracy is at most this never beat chance (10% on ten
# classes): it collapsed, even where its loss stayed finite.
CHANCE_BAND = 0.12


def collapsed(best_val_acc) -> bool:
    """A run that trained and never beat chance (`best_val_acc` None or NaN: it trained no
    epoch, which is not a collapse)."""
    return best_val_acc is not None and not pd.isna(best_val_acc) \
        and best_val_acc <= CHANCE_BAND


def failed(runs: pd.DataFrame) -> pd.Series:
    """Per run: diverged (non-finite loss) or collapsed (finite loss, never above chance)."""
    return (runs["status"] == "diverged") | runs["best_val_acc"].map(collapsed)


def _long_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch columns -> rows with split (train/val) and metric (loss/acc).

    "train" is the clean training measurement (eval mode, no augmentation, like
    validation) when the run has it: the running train_loss/train_acc average
    augmented batches while the weights move, so against validation they would
    show a gap (or its absence) that is partly an artefact of how they are measured.
    """
    df = df.copy()
    if {"clean_train_loss", "clean_train_acc"} <= set(df.columns):
        df = df.drop(columns=["train_loss", "train_acc"], errors="ignore").rename(
            columns={"clean_train_loss": "train_loss", "clean_train_acc": "train_acc"})
    value_cols = [c for c in ("train_loss", "train_acc", "val_loss", "val_acc") if c in df]
    ids = [c for c in df.columns if c not in value_cols]
    long = df.melt(id_vars=ids, value_vars=value_cols, var_name="series", value_name="value")
    long[["split", "metric"]] = long["series"].str.split("_", n=1, expand=True)
    return long.drop(columns="series")


# ---------------------------------------------------------------- reading (chapters)

def current_profile() -> str:
    from analysis.plan import resolve_profile

    return resolve_profile(None)


def _root(results=None) -> Path:
    return paths.results_dir(results)


def load_index(profile: str | None = None, results=None) -> list[dict]:
    profile = profile or current_profile()
    path = _root(results) / "index" / f"{profile}.json"
    if not path.exists():
        raise ResultsMissing(f"no results for profile {profile!r} under {_root(results)}: "
                             f"run `dlbook run --profile {profile}` first "
                             f"(or point ${paths.RESULTS_ENV} at the results folder)")
    return json.loads(path.read_text())


def _matching(experiment, question, profile, results) -> list[dict]:
    records = load_index(profile, results)
    if experiment is not None:
        records = [r for r in records if experiment in r["experiments"]]
    if question is not None:
        records = [r for r in records if question in r["questions"]]
    if not records:
        raise ResultsMissing(f"the plan for profile {profile or current_profile()!r} has no run "
                             f"for experiment={experiment!r} question={question!r}")
    return records


def runs(experiment: str | None = None, question: str | None = None,
         profile: str | None = None, results=None, include_missing: bool = False) -> pd.DataFrame:
    """One row per run the plan needs: key, status, parameters, and the run's summary numbers
    (flattened: test.best.acc -> test_best_acc); a training run also gets `final_val_acc`
    (`final_accuracy`), the accuracy the book compares settings by.

    Every planned run must be finished or diverged, else ResultsMissing says which are not
    and how to run them: a figure or mean silently drawn from part of a sweep would answer
    a different question. `include_missing=True` returns failed and not-yet-run rows too.
    """
    rows = []
    for rec in _matching(experiment, question, profile, results):
        folder = run_dir(rec["key"], results)
        status = read_json(folder / "status.json")
        status["data_official"] = (status.get("data") or {}).get("official")  # None: unrecorded
        summary = read_json(folder / "summary.json")
        row = {"key": rec["key"], "experiment": experiment or rec["experiments"][0],
               "status": status.get("status", "missing"), **rec["params"]}
        row.update({k: status.get(k) for k in STATUS_COLUMNS})
        # status.json is the runner's verdict on the whole notebook; the summary's own
        # status is written before the later cells ran, so it must not override it.
        row.update(_flatten({k: v for k, v in summary.items()
                             if k not in ("status", "device", "seconds", "config")}))
        if "best_val_acc" in row:
            row["final_val_acc"] = final_accuracy(folder / "metrics.csv", row["status"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not include_missing:
        absent = frame[~frame["status"].isin(DONE)]
        if len(absent):
            what = experiment or question
            profile = profile or current_profile()
            counts = ", ".join(f"{n} {s}" for s, n in absent["status"].value_counts().items())
            where = "" if results is None else f" --results {results}"
            raise ResultsMissing(
                f"{len(absent)} of the {len(frame)} runs of {what!r} (profile {profile}) are not "
                f"finished ({counts}): run `dlbook run --profile {profile} --only {what}{where}` "
                f"(`dlbook status` lists them; a failed run's error is in its status.json)")
    return frame


# The book's main accuracy: validation accuracy averaged over a run's last epochs, not the
# maximum over noisy epochs (which picks the luckiest epoch, and more so the more epochs
# there are). Best-epoch numbers remain where a checkpoint is really selected by it.
FINAL_EPOCHS = 3


def final_accuracy(metrics_csv: Path, status: str) -> float:
    """Mean validation accuracy of a run's last FINAL_EPOCHS epochs (all of them if it has
    fewer); NaN for a run that diverged or completed no epoch."""
    if status != "finished" or not Path(metrics_csv).exists():
        return math.nan
    val = pd.read_csv(metrics_csv, usecols=["epoch", "val_acc"]).sort_values("epoch")["val_acc"]
    return float(val.tail(FINAL_EPOCHS).mean()) if len(val) else math.nan


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{name}_"))
        else:
            out[name] = v
    return out


def table(name: str, experiment: str | None = None, question: str | None = None,
          profile: str | None = None, results=None, long: bool = False) -> pd.DataFrame:
    """A table every matching finished run wrote (e.g. "metrics"), concatenated, with the
    run's key, status, experiment and plan parameters as leading columns. Where the table
    has a column of a parameter's name, the table's own values stay: a metrics table's `lr`
    is the rate each epoch used, which a schedule moves away from the configured one.
    `long=True` melts train/val metrics."""
    done = runs(experiment, question, profile, results)
    params = sorted({p for rec in _matching(experiment, question, profile, results)
                     for p in rec["params"]})
    lead = ["key", "status", "experiment"] + params
    frames = []
    for _, row in done.iterrows():
        path = run_dir(row["key"], results) / f"{name}.csv"
        if not path.exists():
            continue
        df = pd.read_csv(path)
        for col in reversed(lead):
            if col not in df:  # a list-valued parameter must be repeated, not broadcast
                df.insert(0, col, [row[col]] * len(df))
        frames.append(df)
    if not frames:
        raise ResultsMissing(f"finished runs of experiment={experiment!r} wrote no {name}.csv")
    out = pd.concat(frames, ignore_index=True)
    return _long_metrics(out) if long else out


def provenance(profile: str | None = None, results=None) -> dict:
    """Which profile produced the book, on which hardware, in how long (from status records)."""
    profile = profile or current_profile()
    statuses = [read_json(run_dir(r["key"], results) / "status.json")
                for r in load_index(profile, results)]
    done = [s for s in statuses if s.get("status") in DONE]
    return {
        "profile": profile,
        "planned": len(statuses),
        "done": len(done),
        "failed": sum(s.get("status") == "failed" for s in statuses),
        "compute_seconds": sum(s.get("seconds") or 0 for s in done),
        "devices": sorted({s.get("device") for s in done if s.get("device")}),
        "hosts": sorted({s.get("host") for s in done if s.get("host")}),
        "torch": sorted({(s.get("versions") or {}).get("torch") for s in done} - {None}),
        "commits": sorted({s.get("git_commit") for s in done if s.get("git_commit")}),
        # True: official CIFAR-10 pixels; False: another copy; None: not recorded.
        "data_official": sorted({(s.get("data") or {}).get("official") for s in done},
                                key=str),
        "finished_at": max((s.get("finished") for s in done if s.get("finished")), default=None),
        "env_profile": os.environ.get(paths.PROFILE_ENV, "auto"),
    }


def run_times(profile: str | None = None, results=None) -> pd.DataFrame:
    """Per experiment of a profile: runs, summed and longest run seconds, devices."""
    rows = []
    for rec in load_index(profile, results):
        status = read_json(run_dir(rec["key"], results) / "status.json")
        if status.get("status") in DONE:
            rows.append({"experiment": rec["experiments"][0], "seconds": status.get("seconds"),
                         "device": status.get("device")})
    if not rows:
        raise ResultsMissing(f"no finished runs for profile {profile or current_profile()!r}")
    df = pd.DataFrame(rows)
    return (df.groupby("experiment", sort=False)
            .agg(runs=("seconds", "size"), total_s=("seconds", "sum"),
                 longest_s=("seconds", "max"),
                 device=("device", lambda d: ", ".join(sorted(set(d.dropna())))))
            .round({"total_s": 0, "longest_s": 0}).reset_index())


def _t(level: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


def mean_ci(df: pd.DataFrame, by: str | list[str], value: str, level: float = NOISE_LEVEL,
            bounded: bool = False) -> pd.DataFrame:
    """Mean of `value` per group with a Student-t confidence interval over runs (seeds).

    `bounded=True` is for values in [0, 1] (accuracies, shares): the interval is computed on
    the logit scale and mapped back, so it stays inside 0-100% however few the runs (a
    plain t-interval around 95% from three runs can reach past 100%). One run per group
    gives a NaN interval: a single run carries no estimate of its noise.
    """
    def one(s: pd.Series) -> pd.Series:
        s = s.dropna().astype(float)
        n, mean = len(s), s.mean()
        if n < 2:
            return pd.Series({"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n})
        if bounded:
            z = _logit(s)
            half = _t(level, n - 1) * z.std(ddof=1) / math.sqrt(n)
            low, high = _expit(z.mean() - half), _expit(z.mean() + half)
            low, high = min(low, mean), max(high, mean)
        else:
            half = _t(level, n - 1) * s.std(ddof=1) / math.sqrt(n)
            low, high = mean - half, mean + half
        return pd.Series({"mean": mean, "ci_low": low, "ci_high": high, "n": n})

    return df.groupby(by)[value].apply(one).unstack().reset_index()


def _logit(p: pd.Series) -> pd.Series:
    eps = 1e-4  # an accuracy of exactly 0 or 1 stays finite on the logit scale
    p = p.clip(eps, 1 - eps)
    return (p / (1 - p)).map(math.log)


def _expit(z: float) -> float:
    return 1 / (1 + math.exp(-z))


class Verdict(str, enum.Enum):
    """How a difference between two settings stands against the noise over seeds."""

    HIGHER = "higher"         # the whole interval lies above zero
    LOWER = "lower"           # the whole interval lies below zero
    WITHIN = "within noise"   # the interval contains zero: inconclusive, never "equal"
    UNJUDGED = "unjudged"     # too few runs, or no spread at all, for an interval

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Difference:
    """`value` at one setting minus at another, over seeds: the mean difference, its
    confidence interval, how many pairs (or runs) it rests on and the verdict."""

    diff: float
    low: float
    high: float
    n: int
    paired: bool
    verdict: Verdict

    def equivalent(self, margin: float) -> bool:
        """The whole interval lies within +-margin: no difference larger than the margin
        (an equivalence test at the same level; "within noise" alone is no such claim)."""
        return self.verdict is not Verdict.UNJUDGED and -margin <= self.low \
            and self.high <= margin


def phrase(d: Difference, *, higher: str, lower: str, within: str, unjudged: str) -> str:
    """The words for `d`'s verdict: the one place prose is chosen by a verdict."""
    return {Verdict.HIGHER: higher, Verdict.LOWER: lower, Verdict.WITHIN: within,
            Verdict.UNJUDGED: unjudged}[d.verdict]


# How every chapter judges a difference; each states it once (NOISE_METHOD).
NOISE_METHOD = (
    "A difference between two settings is the mean over seeds of their per-seed differences "
    "(two runs that share a seed share their data order and, where shapes allow, their "
    "initial weights, so pairing them cancels what the seed alone decides), with a 95% "
    "Student-t confidence interval over those paired differences. A difference whose "
    "interval contains zero is within noise: inconclusive, which is not the same as equal; "
    "where the text says two settings are equivalent, the whole interval lies inside a "
    "margin it names. With a single seed, or runs that do not vary at all, no interval "
    "exists and nothing is judged.")


def difference(df: pd.DataFrame, column: str, a, b, value: str, pair: str = "seed",
               level: float = NOISE_LEVEL) -> Difference:
    """`value` at `column == a` minus at `column == b`, judged against the noise over seeds.

    Runs that share a `pair` value (the seed) are paired and the interval is a Student-t
    interval over the per-pair differences; without shared seeds it falls back to Welch's
    interval for two independent samples. Too few runs, or differences without any spread
    (every pair differs by exactly the same, as counts of zero events do), give an
    unjudged verdict: there is no noise to judge against. Runs whose value is missing (a
    diverged run's accuracy) are left out.
    """
    runs = df.dropna(subset=[value])
    ra = runs[runs[column] == a].set_index(pair)[value].astype(float)
    rb = runs[runs[column] == b].set_index(pair)[value].astype(float)
    shared = ra.index.intersection(rb.index)
    if len(shared) >= 2:
        d = ra.loc[shared] - rb.loc[shared]
        n, diff, spread = len(d), float(d.mean()), float(d.std(ddof=1))
        half = _t(level, n - 1) * spread / math.sqrt(n)
        paired = True
    elif len(ra) >= 2 and len(rb) >= 2:
        n, diff = min(len(ra), len(rb)), float(ra.mean() - rb.mean())
        va, vb = ra.var(ddof=1) / len(ra), rb.var(ddof=1) / len(rb)
        spread = math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va ** 2 / (len(ra) - 1) + vb ** 2 / (len(rb) - 1)) \
            if va + vb > 0 else 1
        half = _t(level, dof) * spread
        paired = False
    else:
        diff = float(ra.mean() - rb.mean()) if len(ra) and len(rb) else math.nan
        return Difference(diff, math.nan, math.nan, min(len(ra), len(rb)), False,
                          Verdict.UNJUDGED)
    if spread == 0:
        return Difference(diff, math.nan, math.nan, int(n), paired, Verdict.UNJUDGED)
    low, high = diff - half, diff + half
    verdict = Verdict.HIGHER if low > 0 else Verdict.LOWER if high < 0 else Verdict.WITHIN
    return Difference(diff, float(low), float(high), int(n), paired, verdict)


def differences(df: pd.DataFrame, column: str, reference, value: str,
                pair: str = "seed") -> pd.DataFrame:
    """`difference` of every other value of `column` against `reference`, one row each
    (the Difference's fields as columns, and the Difference itself as `d`)."""
    others = [v for v in df[column].drop_duplicates() if v != reference]
    rows = []
    for v in others:
        d = difference(df, column, v, reference, value, pair)
        rows.append({column: v, **dataclasses.asdict(d), "d": d})
    return pd.DataFrame(rows, columns=[column, "diff", "low", "high", "n", "paired", "verdict",
                                       "d"])


def data_note(official: pd.Series) -> str:
    """One sentence, for chapters that compare with published figures, on which CIFAR-10
    pixels the runs read (their `data_official` values: True, False or None, unrecorded)."""
    values = set(official.map(lambda v: None if pd.isna(v) else bool(v)))
    if values == {True}:
        return ("The runs read the official CIFAR-10 pixels and labels, in the official order "
                "(checked by hashing the decoded images, not the files).")
    if values == {False}:
        return ("The runs read a copy of CIFAR-10 whose pixels differ from the official ones "
                "(a re-encoded copy, for instance). The published figures were measured on "
                "the official pixels, so part of any gap to them can come from the data "
                "rather than the recipe.")
    if None in values or not values:
        return "Not every run recorded whether it read the official CIFAR-10 pixels."
    return "Some runs read the official CIFAR-10 pixels and some another copy."


def predictions(run, data, split: str = "test", results=None) -> pd.DataFrame:
    """One row per image of `split` ("test" or "val") of `data` (a data.Cifar10): its index,
    true label, the run's final network's predicted label and that prediction's probability."""
    import torch

    from analysis import data as data_module

    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    model = trained_model(run, results)
    probs = []
    with torch.inference_mode():
        for xb in x.split(1000):
            probs.append(model(data_module.normalize(xb, data.mean, data.std)).softmax(1))
    p = torch.cat(probs)
    confidence, predicted = p.max(1)
    return pd.DataFrame({"index": range(len(y)), "label": y.numpy(),
                         "predicted": predicted.numpy(), "confidence": confidence.numpy()})


def confusion(pred: pd.DataFrame, classes) -> pd.DataFrame:
    """Counts of true class (rows) against predicted class (columns), every class present."""
    names = list(classes)
    table = pd.crosstab(pd.Categorical(pred["label"].map(dict(enumerate(names))), names),
                        pd.Categorical(pred["predicted"].map(dict(enumerate(names))), names),
                        dropna=False)
    table.index.name, table.columns.name = "true class", "predicted class"
    return table


def per_class_accuracy(pred: pd.DataFrame, classes) -> pd.Series:
    """Accuracy on each true class."""
    hit = (pred["label"] == pred["predicted"]).groupby(pred["label"]).mean()
    return hit.rename(index=dict(enumerate(classes)))
