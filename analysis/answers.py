"""The answers of `book/answers.yml` as the book shows them, with a key number each,
computed live from the results the way its chapter computes it.

- `records()`: the answer records, by question id;
- `KEYS`: per question, a function `(results_dir=None) -> Key`: the key number, a
  short phrase ("initial loss 2.304 vs ln 10 = 2.303"), and where the finding depends
  on the results, the short answer it gives. A question whose runs are missing raises
  `results.ResultsMissing`, as its chapter does;
- `opening(qid)`: the quoted question and the answer callout that open its section;
- `glance()`: one row per question of the course, answered or not, for the preface.

The text of answers.yml is static, so it only says what holds on every profile; what
the runs found is said here, from their numbers. Chapters share the computations a key
number needs from here (`best_cells`, `overfitting_gap`, `all_layers_speedup`, ...),
so that the callout and the prose cannot disagree. Presentation code: no run's key
depends on this module (plan.PRESENTATION_MODULES).
"""
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from analysis import course, paths, plots, results
from analysis.course import QUESTION_IDS
from analysis.paths import ANSWERS_FILE
from analysis.plots import count, interval, num, pct, pts

NOT_ANSWERED = "not answered yet"
NO_RESULTS = "no results yet"
ONE_SEED = "Not judged: one seed per setting"



@dataclass(frozen=True)
class Key:
    """A question's key number, and its short answer when that depends on the results
    (None: the record's static `short:`)."""

    number: str
    answer: str | None = None


# ---------------------------------------------------------------- the records

def records(path=None) -> dict[str, dict]:
    """The records of book/answers.yml (or `path`), by question id."""
    path = Path(path) if path is not None else paths.PROJECT_ROOT / ANSWERS_FILE
    return {r["id"]: r for r in yaml.safe_load(path.read_text(encoding="utf-8")) or []}


def short(qid: str, record: dict, key: Key | None = None) -> str:
    """The short answer: the verdict for tf-*, else the key's, else the record's `short:`."""
    if qid.startswith("tf-"):
        return "True" if record["verdict"] else "False"
    text = (key.answer if key else None) or record.get("short")
    if not text:
        raise KeyError(f"{ANSWERS_FILE}: answer {qid} has no `short:` and its key number "
                       "gives no answer")
    return " ".join(text.split())


def key_number(qid: str, results_dir=None) -> Key:
    """The key number of question `qid` (ResultsMissing when its runs are missing)."""
    return KEYS[qid](results_dir)


# ---------------------------------------------------------------- for the book

def callout(qid: str, key: Key | None = None, path=None, results_dir=None) -> str:
    """A Quarto callout with the answer: short answer, the record's answer, key number."""
    record = records(path)[qid]
    key = key_number(qid, results_dir) if key is None else key
    headline = short(qid, record, key)
    body = " ".join(record["answer"].split())
    return (f'::: {{.callout-note title="Answer"}}\n**{headline}.** {body} '
            f"**In numbers:** {key.number}.\n:::\n")


def opening(qid: str, key: Key | None = None, path=None, results_dir=None) -> str:
    """What opens a question's section: the question, quoted, and the answer callout
    (for a cell with `#| output: asis`)."""
    quote = f"> *{course.question(qid)}*\n\n"
    return "\n" + quote + callout(qid, key, path, results_dir)


def glance(path=None, results_dir=None, keys=None) -> pd.DataFrame:
    """One row per question of the course (book.QUESTION_IDS): id, question, short answer,
    key number and a cross-reference to its section (markdown: show it with
    `plots.table(..., markdown=["section"])`); questions without a record say so."""
    found, keys = records(path), KEYS if keys is None else keys
    rows = []
    for qid in QUESTION_IDS:
        record = found.get(qid)
        if record is None:
            rows.append({"id": qid, "question": course.question(qid),
                         "answer": NOT_ANSWERED,
                         "key number": "–", "section": "–"})
            continue
        try:
            k = keys[qid](results_dir)
            answer, number = short(qid, record, k), k.number
        except results.ResultsMissing:
            answer = short(qid, record) if qid.startswith("tf-") or record.get("short") \
                else NO_RESULTS
            number = NO_RESULTS
        rows.append({"id": qid, "question": course.question(qid), "answer": answer,
                     "key number": number, "section": f"@sec-{qid}"})
    return pd.DataFrame(rows)


def claims(path=None) -> pd.DataFrame:
    """One row per true/false statement: a cross-reference to its section, the statement,
    our verdict and its one-line reason (the record's `reason:`), and the typical
    submission's verdict, marked where it differs from ours. A statement without a record
    says so. Markdown in `section`: show it with `plots.table(..., markdown=["section"])`."""
    found = records(path)
    rows = []
    for qid in (q for q in QUESTION_IDS if q.startswith("tf-")):
        record = found.get(qid)
        typical = "True" if course.typical_verdicts()[qid] else "False"
        ours = short(qid, record) if record else NOT_ANSWERED
        differs = record is not None and ours != typical
        rows.append({"section": f"@sec-{qid}" if record else "–",
                     "statement": course.question(qid),
                     "verdict": ours,
                     "why": " ".join(record["reason"].split()) if record else "–",
                     "typical submission": typical + (" (differs)" if differs else "")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- shared with chapters

def judged(d: dict) -> str:
    """A `results.difference` with its verdict: '3.2 points (95% CI 2.1 to 4.3), beyond
    noise'."""
    if d["verdict"] == "unjudged":
        return interval(d)
    return f"{interval(d)}, {'within' if d['verdict'] == 'within noise' else 'beyond'} noise"


def last_epoch(metrics: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The final epoch of every run (per `by` and seed), with the train/validation accuracy
    gap (training accuracy measured like validation accuracy: eval mode, no augmentation)."""
    last = metrics.sort_values("epoch").groupby(by + ["seed"]).tail(1).copy()
    last["gap"] = last["clean_train_acc"] - last["val_acc"]
    return last


def overfitting_gap(metrics: pd.DataFrame) -> dict:
    """Training minus validation accuracy at the last epoch (both scored in eval mode, no
    augmentation), as a `results.difference` over seeds: a run's two scores are a pair."""
    last = metrics[metrics["epoch"] == metrics["epoch"].max()]
    return results.difference(
        pd.concat([last.assign(split="train", acc=last["clean_train_acc"]),
                   last.assign(split="val", acc=last["val_acc"])]),
        "split", "train", "val", "acc")


OVERFIT_MARGIN = 0.02  # a gap whose whole interval lies above 2 points is overfitting


def overfits(gap: dict) -> bool:
    return gap["verdict"] == "higher" and gap["low"] > OVERFIT_MARGIN


def cell_name(padding, flip) -> str:
    """An augmentation setting of Lab 2's grid: 'padding 4, flip 0.5'."""
    return f"padding {int(padding)}, flip {num(flip)}"


def best_cells(aug: pd.DataFrame) -> tuple[str, list[str]]:
    """The augmentation setting with the highest mean best validation accuracy, and every
    setting within noise of it, itself first (a group of best settings, not one winner)."""
    aug = aug.assign(cell=[cell_name(p, f) for p, f in
                           zip(aug["crop_padding"], aug["flip_p"], strict=True)])
    top = cell_name(*aug.groupby(["crop_padding", "flip_p"])["best_val_acc"].mean().idxmax())
    vs_top = results.differences(aug, "cell", top, "best_val_acc")
    return top, [top] + list(vs_top.loc[vs_top["verdict"].isin(["within noise", "unjudged"]),
                                        "cell"])


CHANCE_BAND = results.CHANCE_BAND
# Runs trained for fewer epochs (the smoke profile's one or two) decide no true/false
# statement: their verdict is None, which the chapter accepts on the smoke profile only.
MIN_EPOCHS_TO_JUDGE = 5


failed = results.failed


def good_rates(runs: pd.DataFrame) -> tuple[float, list[float]]:
    """A learning-rate sweep's rate of highest mean best validation accuracy, and the other
    rates within noise of it; a rate at which a run failed is not among them, even where
    too few runs finished to judge it."""
    good = runs.groupby("lr")["best_val_acc"].mean().idxmax()
    vs = results.differences(runs, "lr", good, "best_val_acc")
    bad = set(runs.loc[failed(runs), "lr"])
    return good, sorted(lr for lr, verdict in zip(vs["lr"], vs["verdict"], strict=True)
                        if verdict in ("within noise", "unjudged") and lr not in bad)


def penalty(row) -> str:
    """A Lab 2 L1/L2 run's penalty: 'L1 0.0001', 'L2 0.001' or 'none'."""
    if row["l1"] > 0:
        return f"L1 {row['l1']:g}"
    return f"L2 {row['weight_decay']:g}" if row["weight_decay"] > 0 else "none"


NEAR_ZERO = 1e-3  # |w| below this counts as a zero weight


def lenet_weights(runs: pd.DataFrame, results_dir=None, per_layer: int = 4000) -> pd.DataFrame:
    """The conv and fc weights of finished LeNet-5 runs, a sample of up to `per_layer` per
    layer and run: penalty, seed, layer (conv1, conv2, fc3..., as in the cost tables),
    weight, near_zero (|w| < NEAR_ZERO)."""
    from analysis import flops, models

    costs = flops.module_costs(models.build_model("lenet5"), (3, 32, 32))
    layer = costs.set_index("module")["layer"]
    rows = []
    for _, run in runs[runs["status"] == "finished"].iterrows():
        for name, w in results.load_weights(run["key"], results_dir).items():
            if name.endswith("weight") and w.dim() > 1:  # not biases or batch norm
                rows += [{"penalty": penalty(run), "seed": run["seed"],
                          "layer": layer[name.removesuffix(".weight")], "weight": v}
                         for v in w.flatten()[:: max(1, w.numel() // per_layer)].tolist()]
    weights = pd.DataFrame(rows)
    return weights.assign(near_zero=weights["weight"].abs() < NEAR_ZERO)


def matched_penalties(accuracy: pd.Series) -> list[tuple[str, str]]:
    """Each L1 setting with the L2 setting of closest mean accuracy (`accuracy` by penalty)."""
    def strength(p):
        return float(p.split()[1])

    l1 = sorted((p for p in accuracy.index if p.startswith("L1")), key=strength)
    l2 = sorted((p for p in accuracy.index if p.startswith("L2")), key=strength)
    return [(a, min(l2, key=lambda b: abs(accuracy[b] - accuracy[a]))) for a in l1]


def all_layers_speedup(lat: pd.DataFrame, shapes) -> pd.DataFrame:
    """Per device, pass and batch: the time of all the standard 3x3 convs of ResNet-20
    (`count` of each layer shape) over that of their separable replacements; a row only
    where every one of `shapes` has a sane timing (a partial sum answers nothing)."""
    def one(d):
        d = d[d["scope"] == "layer"]
        if set(d["shape"]) != set(shapes):
            return float("nan")
        return (d["count"] * d["standard_s"]).sum() / (d["count"] * d["separable_s"]).sum()

    return (lat.groupby(["device", "pass", "batch"]).apply(one, include_groups=False)
            .rename("speedup").dropna().reset_index())


# ---------------------------------------------------------------- Part 1 (tf-01 to tf-07)

PROBE_IMAGES = 1000  # validation images the BN statistics and the eager demo look at
NEAR_ZERO_MEAN = 0.1  # a channel mean within 0.1 of its std counts as zero


def probe_images(n: int = PROBE_IMAGES):
    """The first `n` validation images, normalised as the networks saw them, and labels."""
    from analysis import data

    cifar = _cifar()
    return data.normalize(cifar.val_x[:n], cifar.mean, cifar.std), cifar.val_y[:n]


def bn_stats(results_dir=None) -> pd.DataFrame:
    """`probes.batchnorm_stats` of every trained BN-LeNet of lenet-bn, with its seed."""
    from analysis import probes

    bn = results.runs(experiment="lenet-bn", results=results_dir)
    bn = bn[bn["batch_norm"].astype(bool) & (bn["status"] == "finished")]
    x, _ = probe_images()
    return pd.concat([probes.batchnorm_stats(results.trained_model(run, results_dir), x)
                      .assign(seed=run["seed"]) for _, run in bn.iterrows()],
                     ignore_index=True)


def near_zero_share(stats: pd.DataFrame, stage: str) -> float:
    """The share of channels whose mean at `stage` (in, norm, out, act) is within
    NEAR_ZERO_MEAN of that channel's standard deviation."""
    return float((stats[f"{stage}_mean"].abs()
                  <= NEAR_ZERO_MEAN * stats[f"{stage}_std"]).mean())


def tf01_verdict(stats: pd.DataFrame) -> bool:
    """The claim's first half holds only if most channels have a near-zero mean both after
    the learned shift and after the activation: the "activations" the claim means."""
    return near_zero_share(stats, "out") > 0.5 and near_zero_share(stats, "act") > 0.5


def eps_frame(results_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """lenet-adam-eps: its runs and per-epoch metrics (update_ratio: a step's RMS change of
    the weights over the learning rate)."""
    return (results.runs(experiment="lenet-adam-eps", results=results_dir),
            results.table("metrics", experiment="lenet-adam-eps", results=results_dir))


def tf04_verdict(runs: pd.DataFrame) -> bool | None:
    """Raising epsilon to 1.0 is good practice only if it measurably helps (None: trained
    too briefly to judge)."""
    if runs["epochs"].max() < MIN_EPOCHS_TO_JUDGE:
        return None
    d = results.difference(runs, "adam_eps", runs["adam_eps"].max(), runs["adam_eps"].min(),
                           "best_val_acc")
    return d["verdict"] == "higher"


TF05_CELLS = {(False, False): "neither", (True, False): "L2 only", (False, True): "dropout only",
              (True, True): "L2 + dropout"}


def tf05_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """lenet-l2-dropout's runs named by their cell of the 2x2 grid."""
    return runs.assign(cell=[TF05_CELLS[(wd > 0, p > 0)]
                             for wd, p in zip(runs["weight_decay"], runs["dropout"],
                                              strict=True)])


def tf05_verdict(cells: pd.DataFrame) -> bool | None:
    """A guarantee holds only if L2 + dropout beat the better single method on every seed and
    beat each of them beyond noise (None: trained too briefly to judge)."""
    if cells["epochs"].max() < MIN_EPOCHS_TO_JUDGE:
        return None
    lost, _ = tf05_losses(cells)
    return lost == 0 and all(
        results.difference(cells, "cell", "L2 + dropout", c, "best_val_acc")["verdict"]
        == "higher" for c in ("L2 only", "dropout only"))


def tf05_losses(cells: pd.DataFrame) -> tuple[int, int]:
    """Seeds on which L2 + dropout scored below the better of the two alone, and seeds."""
    acc = cells.pivot_table(index="seed", columns="cell", values="best_val_acc")
    better = acc[["L2 only", "dropout only"]].max(axis=1)
    return int((acc["L2 + dropout"] < better).sum()), len(acc)


SPIKE_FACTOR, SPIKE_WINDOW = 2.0, 50  # a spike: a loss above 2x the median of the 50 before


def loss_spikes(steps: pd.DataFrame, by: list[str], factor: float = SPIKE_FACTOR,
                window: int = SPIKE_WINDOW) -> pd.DataFrame:
    """Per run (`by` + seed): steps after the first epoch whose training loss exceeds
    `factor` times the median of the `window` steps before it, and the run's count of such
    spikes. A diverged step (no finite loss) counts as a spike."""
    rows = []
    for keys, d in steps.sort_values(["epoch", "step"]).groupby(by + ["seed"]):
        loss = d["loss"].astype(float).reset_index(drop=True)
        median = loss.rolling(window, min_periods=window).median().shift(1)
        later = (d["epoch"] > 1).to_numpy()
        spikes = (later & ((loss > factor * median) | loss.isna()).to_numpy()).sum()
        rows.append({**dict(zip(by + ["seed"], keys, strict=True)), "spikes": int(spikes)})
    return pd.DataFrame(rows)


def leaky_frames(results_dir=None):
    """lenet-leaky: runs, per-epoch metrics (with dead_<layer>) and per-step losses."""
    return (results.runs(experiment="lenet-leaky", results=results_dir),
            results.table("metrics", experiment="lenet-leaky", results=results_dir),
            results.table("steps", experiment="lenet-leaky", results=results_dir))


def dead_share(metrics: pd.DataFrame) -> pd.Series:
    """The share of dead hidden units of LeNet-5 (all four hidden layers pooled, weighted by
    their units) per row of a metrics table."""
    units = {"dead_conv1": 6, "dead_conv2": 16, "dead_fc3": 120, "dead_fc4": 84}
    cols = [c for c in units if c in metrics]
    return sum(metrics[c] * units[c] for c in cols) / sum(units[c] for c in cols)


def tf06_evidence(runs, metrics, steps) -> dict:
    """What decides tf-06, per learning rate: leaky - ReLU differences over seeds (`at`: best
    validation accuracy, dead share at the last epoch, loss spikes per run) and per rate and
    activation (`table`): runs, diverged runs, mean best and final validation accuracy,
    dead share at the last epoch, spikes per run, and the spread (std) of best accuracy."""
    last = metrics.sort_values("epoch").groupby(["activation", "lr", "seed"]).tail(1)
    last = last.assign(dead=dead_share(last))
    spikes = loss_spikes(steps, ["activation", "lr"])
    at = {lr: {"acc": results.difference(runs[runs["lr"] == lr], "activation", "leaky_relu",
                                         "relu", "best_val_acc"),
               "dead": results.difference(last[last["lr"] == lr], "activation", "leaky_relu",
                                          "relu", "dead"),
               "spikes": results.difference(spikes[spikes["lr"] == lr], "activation",
                                            "leaky_relu", "relu", "spikes")}
          for lr in sorted(runs["lr"].unique())}
    by = ["lr", "activation"]
    table = (runs.groupby(by).agg(runs=("seed", "size"),
                                  diverged=("status", lambda s: int((s == "diverged").sum())),
                                  best_acc=("best_val_acc", "mean"),
                                  spread=("best_val_acc", "std"))
             .join(last.groupby(by).agg(final_acc=("val_acc", "mean"), dead=("dead", "mean")))
             .join(spikes.groupby(by)["spikes"].mean()))
    return {"at": at, "table": table, "last": last, "spikes": spikes,
            "epochs": int(runs["epochs"].max())}


def tf06_verdict(ev: dict) -> bool | None:
    """The claim holds if leaky ReLU fixes dying ReLU (fewer dead units or a higher best
    accuracy than ReLU at some rate, beyond noise) AND is less stable: at some rate it
    diverges more often than a ReLU network that still learns there (final accuracy above
    chance: a dead network cannot diverge, so its finite loss is no stability), or spikes
    more beyond noise, or spreads over seeds twice as much at every rate where both
    trained. None: trained too briefly to judge (the smoke profile)."""
    if ev["epochs"] < MIN_EPOCHS_TO_JUDGE:
        return None
    t, at = ev["table"], ev["at"]
    rates = sorted(at)
    fixes = any(at[lr]["dead"]["verdict"] == "lower" or at[lr]["acc"]["verdict"] == "higher"
                for lr in rates)
    relu_learns = {lr: t.loc[(lr, "relu"), "final_acc"] > CHANCE_BAND for lr in rates}
    both = [lr for lr in rates if not t.loc[[(lr, "relu"), (lr, "leaky_relu")], "diverged"].any()]
    less_stable = (
        any(t.loc[(lr, "leaky_relu"), "diverged"] > t.loc[(lr, "relu"), "diverged"]
            and relu_learns[lr] for lr in rates)
        or any(at[lr]["spikes"]["verdict"] == "higher" for lr in rates)
        or (bool(both) and all(t.loc[(lr, "leaky_relu"), "spread"]
                               > 2 * t.loc[(lr, "relu"), "spread"] for lr in both)))
    return bool(fixes and less_stable)


SPARSITY_THRESHOLDS = (NEAR_ZERO / 10, NEAR_ZERO, NEAR_ZERO * 10)


def sparsity(results_dir=None) -> pd.DataFrame:
    """lenet-l1's finished runs: per run, layer and threshold, the share of weights below it
    (`probes.weight_sparsity`), with the run's penalty, seed and best validation accuracy."""
    from analysis import probes

    runs = results.runs(experiment="lenet-l1", results=results_dir)
    runs = runs[runs["status"] == "finished"]
    return pd.concat([probes.weight_sparsity(results.load_weights(run["key"], results_dir),
                                             SPARSITY_THRESHOLDS)
                      .assign(penalty=penalty(run), seed=run["seed"],
                              best_val_acc=run["best_val_acc"])
                      for _, run in runs.iterrows()], ignore_index=True)


def overall_sparsity(sp: pd.DataFrame) -> pd.DataFrame:
    """Per run (penalty, seed) and threshold: the share of all its weights below it."""
    return (sp.assign(below=sp["fraction"] * sp["weights"])
            .groupby(["penalty", "seed", "threshold"], as_index=False)[["below", "weights"]].sum()
            .assign(fraction=lambda d: d["below"] / d["weights"]))


def tf07_pairs(sp: pd.DataFrame, threshold: float = NEAR_ZERO) -> list[dict]:
    """Each L1 setting against the L2 setting of closest accuracy (`matched_penalties`): the
    accuracy difference and the difference in the share of weights below `threshold`."""
    runs = sp.drop_duplicates(["penalty", "seed"])
    share = overall_sparsity(sp)
    share = share[share["threshold"] == threshold]
    return [{"l1": a, "l2": b,
             "acc": results.difference(runs, "penalty", a, b, "best_val_acc"),
             "sparse": results.difference(share, "penalty", a, b, "fraction")}
            for a, b in matched_penalties(runs.groupby("penalty")["best_val_acc"].mean())]


def tf07_verdict(pairs: list[dict], epochs: int) -> bool | None:
    """L1 is sparser if, in every matched pair, L1 has more weights below the threshold
    beyond noise; None when no pair could be judged or the runs trained too briefly."""
    verdicts = [p["sparse"]["verdict"] for p in pairs]
    if epochs < MIN_EPOCHS_TO_JUDGE or not verdicts or all(v == "unjudged" for v in verdicts):
        return None
    return all(v == "higher" for v in verdicts)


def times(x: float, decimals: int = 1) -> str:
    """1.956 -> '2.0×'."""
    return f"{x:.{decimals}f}×"


@functools.cache
def _cifar():
    from analysis import data

    return data.load_cifar10()


# ---------------------------------------------------------------- one key per question

def lab1_a(results_dir=None) -> Key:
    from analysis import models

    init = results.runs(experiment="lenet-init", results=results_dir)
    n = models.count_params(models.build_model("lenet5"))
    return Key(f"initial loss {num(init['init_val_loss'].mean(), 4)} vs ln 10 = "
               f"{num(math.log(10), 4)}, accuracy {pct(init['init_val_acc'].mean())}, "
               f"{n:,} parameters")


def lab1_b(results_dir=None) -> Key:
    cifar = _cifar()
    return Key(f"training-split mean {' / '.join(num(v, 3) for v in cifar.mean.tolist())}, "
               f"std {' / '.join(num(v, 3) for v in cifar.std.tolist())} (red / green / blue)")


def lab1_c(results_dir=None) -> Key:
    cifar = _cifar()
    splits = (cifar.train_y, cifar.val_y, cifar.test_y)
    balanced = all(y.bincount(minlength=len(cifar.classes)).unique().numel() <= 2
                   for y in splits)
    return Key(f"{len(cifar.classes)} classes, {' / '.join(f'{len(y):,}' for y in splits)} "
               f"train / validation / test images, {'' if balanced else 'not '}balanced")


def lab1_d(results_dir=None) -> Key:
    base = results.runs(experiment="lenet-baseline", results=results_dir)
    devices = sorted(set(base["device"].dropna()))
    gpu = any(d.startswith("cuda") for d in devices)
    return Key(f"runs on {', '.join(devices)}" + ("" if gpu else ": this build had no GPU"))


def lab1_g(results_dir=None) -> Key:
    base = results.runs(experiment="lenet-baseline", results=results_dir)
    gap = overfitting_gap(results.table("metrics", experiment="lenet-baseline",
                                        results=results_dir))
    loss = base["init_val_loss"].mean()
    start = "≈ ln 10" if abs(loss - math.log(10)) < 0.1 else "far from ln 10"
    answer = "overfits" if overfits(gap) else "shows no clear overfitting in this schedule"
    return Key(f"initial loss {num(loss, 4)}; train - validation accuracy at the last epoch "
               f"{judged(gap)}", f"Initial loss {start}; the network {answer}")


INIT_NAMES = plots.VALUE_NAMES["init"]  # one mapping, shared with the figures


def lab1_h(results_dir=None) -> Key:
    schemes = results.runs(experiment="lenet-init-schemes", results=results_dir)
    vs = results.differences(schemes, "init", "default", "best_val_acc")
    better, worse = ([INIT_NAMES[r["init"]] for _, r in vs.iterrows() if r["verdict"] == v]
                     for v in ("higher", "lower"))
    answer = (f"{' and '.join(better)} beat{'s' * (len(better) == 1)} the default" if better
              else f"No: {' and '.join(worse)} fall{'s' * (len(worse) == 1)} behind the default"
              if worse else ONE_SEED if (vs["verdict"] == "unjudged").all()
              else "No measurable difference from the default")
    return Key("best validation accuracy against the default: " + "; ".join(
        f"{INIT_NAMES[r['init']]} {judged(r)}" for _, r in vs.iterrows()), answer)


def lab2_a(results_dir=None) -> Key:
    aug = results.runs(experiment="lenet-augment", results=results_dir)
    top, tied = best_cells(aug)
    cells = aug.groupby(["crop_padding", "flip_p"])["best_val_acc"].mean()
    others = (f" ({count(len(tied) - 1, 'other setting')} within noise of it)"
              if len(tied) > 1 else "")
    return Key(f"best cell {pct(cells.max())}, no augmentation {pct(cells.loc[(0, 0.0)])}",
               f"{top.capitalize()}{others}")


def lab2_b_bn(results_dir=None) -> Key:
    bn = results.runs(experiment="lenet-bn", results=results_dir)
    metrics = results.table("metrics", experiment="lenet-bn", results=results_dir)
    gain = results.difference(bn, "batch_norm", True, False, "best_val_acc")
    early = results.difference(metrics[metrics["epoch"] == 1], "batch_norm", True, False,
                               "val_acc")
    start = {"higher": "A faster start", "lower": "A slower start",
             "within noise": "No faster start beyond noise", "unjudged": ONE_SEED}
    best = {"higher": "higher best accuracy", "lower": "lower best accuracy",
            "within noise": "best accuracy within noise", "unjudged": "best accuracy unjudged"}
    return Key(f"BN - no BN: best validation accuracy {interval(gain)}, after one epoch "
               f"{interval(early)}",
               f"{start[early['verdict']]}, {best[gain['verdict']]}")


def lab2_b_lr(results_dir=None) -> Key:
    runs = results.runs(experiment="lenet-bn-lr", results=results_dir)
    fails = runs.assign(failed=failed(runs)).groupby(["batch_norm", "lr"])["failed"].sum()
    learns = fails[fails == 0].reset_index().groupby("batch_norm")["lr"].max()
    top = {bn: (num(learns[bn]) if bn in learns else "none") for bn in (False, True)}
    wider = learns.get(True, 0) > learns.get(False, 0)
    return Key(f"largest rate that learns at every seed: {top[False]} without BN, "
               f"{top[True]} with BN",
               "Yes: batch norm widens the usable learning rates" if wider else
               "Not on this grid")


def lab2_b_swish(results_dir=None) -> Key:
    sw = results.runs(experiment="lenet-swish", results=results_dir)
    d = results.difference(sw, "activation", "swish", "relu", "best_val_acc")
    return Key(f"Swish - ReLU: best validation accuracy {interval(d)}",
               {"higher": "Yes, measurably", "lower": "No: measurably worse",
                "within noise": "Not measurably", "unjudged": ONE_SEED}[
                   d["verdict"]])


def lab2_c_lr(results_dir=None) -> Key:
    runs = results.runs(experiment="lenet-lr", results=results_dir)
    best = runs.groupby("lr")["best_val_acc"].mean()
    good, tied = good_rates(runs)
    bad = runs[(runs["status"] == "diverged")
               | ((runs["best_val_acc"] < CHANCE_BAND) & (runs["lr"] > good))]
    failing = sorted(bad["lr"].unique())
    return Key(f"{pct(best.max())} at lr {num(good)}, {pct(best[best.index.min()])} at "
               f"{num(best.index.min())}",
               f"Best at lr {num(good)}"
               + (f" ({' and '.join(num(v) for v in tied)} within noise)" if tied else "")
               + (f"; lr {' and '.join(num(v) for v in failing)} "
                  f"fail{'s' * (len(failing) == 1)}" if failing else ""))


def lab2_c_l2(results_dir=None) -> Key:
    l2 = results.runs(experiment="lenet-l2", results=results_dir)
    last = last_epoch(results.table("metrics", experiment="lenet-l2", results=results_dir),
                      ["weight_decay"])
    top = l2["weight_decay"].max()
    gap = results.difference(last, "weight_decay", top, 0.0, "gap")
    acc = results.difference(l2, "weight_decay", top, 0.0, "best_val_acc")
    gaps = last.groupby("weight_decay")["gap"].mean()
    return Key(f"train - validation gap {pts(gaps[top])} at {num(top)}, {pts(gaps[0.0])} "
               f"without, a change of {interval(gap)}; best validation accuracy "
               f"{interval(acc)}",
               f"At {num(top)}: " + {
                   "lower": "a narrower train-validation gap", "higher": "a wider gap",
                   "within noise": "no change in the gap beyond noise",
                   "unjudged": "the gap not judged (one seed)"}[gap["verdict"]] + ", " + {
                   "higher": "higher accuracy", "lower": "lower accuracy",
                   "within noise": "accuracy within noise",
                   "unjudged": "accuracy not judged"}[acc["verdict"]])


def lab2_c_l1(results_dir=None) -> Key:
    l1 = results.runs(experiment="lenet-l1", results=results_dir)
    l1 = l1.assign(penalty=l1.apply(penalty, axis=1))
    sparse = (lenet_weights(l1, results_dir).groupby(["penalty", "seed"], as_index=False)
              ["near_zero"].mean())
    acc, zero = (d.groupby("penalty")[v].mean() for d, v in ((l1, "best_val_acc"),
                                                             (sparse, "near_zero")))
    pairs = [(a, b, results.difference(l1, "penalty", a, b, "best_val_acc")["verdict"],
              results.difference(sparse, "penalty", a, b, "near_zero")["verdict"])
             for a, b in matched_penalties(acc)]
    same = [z for *_, v, z in pairs if v == "within noise"]  # pairs of equal accuracy
    answer = (ONE_SEED if any("unjudged" in p for p in pairs) else
              "No L1 setting matched an L2 setting's accuracy" if not same else
              "L1 leaves more weights near zero than L2 at the same accuracy"
              if set(same) == {"higher"} else "L1 is not sparser than L2 at the same accuracy")
    return Key("near zero: " + "; ".join(
        f"{a} {pct(zero[a])} of weights at {pct(acc[a])} accuracy, {b} {pct(zero[b])} at "
        f"{pct(acc[b])}" for a, b, *_ in pairs), answer)


def lab3(results_dir=None) -> Key:
    res = results.runs(experiment="resnet20", results=results_dir)
    ci = results.mean_ci(res.assign(model="resnet20"), "model", "test_best_acc").iloc[0]
    spread = (f" (95% CI {pct(ci['ci_low'], 2)} to {pct(ci['ci_high'], 2)}, "
              f"{count(int(ci['n']), 'seed')})" if ci["n"] > 1 else " (one seed)")
    return Key(f"test accuracy {pct(ci['mean'], 2)}{spread} after "
               f"{count(int(res['epochs'].iloc[0]), 'epoch')}")


def tf_01(results_dir=None) -> Key:
    stats = bn_stats(results_dir)
    return Key(f"channel means within {num(NEAR_ZERO_MEAN)} std of zero: "
               f"{pct(near_zero_share(stats, 'norm'), 0)} after normalising, "
               f"{pct(near_zero_share(stats, 'out'), 0)} after the learned shift, "
               f"{pct(near_zero_share(stats, 'act'), 0)} after the ReLU")


def tf_02(results_dir=None) -> Key:
    import torch

    from analysis import probes
    from analysis.models import LeNet5

    torch.manual_seed(0)
    x, y = probe_images(4)
    demo = probes.eager_demo(LeNet5(), x, y)
    graphs = probes.loop_graphs()
    return Key("graph nodes for " + ", ".join(
        f"{count(int(s), 'loop step')}: {int(n)}"
        for s, n in zip(graphs["loop steps"], graphs["graph nodes"], strict=True))
        + f"; the gradient hook ran with {demo['leaf_grads_at_hook']} of "
          f"{demo['parameters']} weight tensors' gradients computed")


def digits_runs(results_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """digits-augment's runs, and each augmentation against none (test accuracy)."""
    runs = results.runs(experiment="digits-augment", results=results_dir)
    return runs, results.differences(runs, "augmentation", "none", "test_acc")


def tf03_verdict(vs_none: pd.DataFrame, epochs: int) -> bool | None:
    """False once an augmentation lowers accuracy beyond noise; True if every one raises
    it; None (nothing decided, or trained too briefly) otherwise."""
    if epochs < MIN_EPOCHS_TO_JUDGE:
        return None
    if (vs_none["verdict"] == "lower").any():
        return False
    return True if (vs_none["verdict"] == "higher").all() else None


def tf_03(results_dir=None) -> Key:
    runs, vs = digits_runs(results_dir)
    acc = runs.groupby("augmentation")["test_acc"].mean()
    mixed = runs.groupby("augmentation")[["six_as_nine", "nine_as_six"]].sum().sum(axis=1)
    return Key(f"digits test accuracy {pct(acc['none'])} without augmentation; "
               + "; ".join(f"{plots.VALUE_NAMES['augmentation'][r.augmentation]} "
                           f"{judged(r._asdict())}, "
                           f"{count(int(mixed[r.augmentation]), '6/9 mix-up')} in all"
                           for r in vs.itertuples()))


def tf_04(results_dir=None) -> Key:
    runs, metrics = eps_frame(results_dir)
    lo, hi = runs["adam_eps"].min(), runs["adam_eps"].max()
    d = results.difference(runs, "adam_eps", hi, lo, "best_val_acc")
    first = metrics[metrics["epoch"] == 1].groupby("adam_eps")["update_ratio"].mean()
    return Key(f"eps {num(hi)} - eps {num(lo)}: best validation accuracy {judged(d)}; "
               f"first-epoch step {num(first[hi] / first[lo], 2)} times the default's")


def tf_05(results_dir=None) -> Key:
    cells = tf05_cells(results.runs(experiment="lenet-l2-dropout", results=results_dir))
    acc = cells.groupby("cell")["best_val_acc"].mean()
    lost, seeds = tf05_losses(cells)
    return Key(f"{', '.join(f'{c} {pct(acc[c])}' for c in TF05_CELLS.values())}; the "
               f"combination lost to the better single method on {lost} of "
               f"{count(seeds, 'seed')}")


def tf_06(results_dir=None) -> Key:
    ev = tf06_evidence(*leaky_frames(results_dir))
    t = ev["table"]
    return Key("; ".join(
        f"lr {num(lr)}: leaky - ReLU best accuracy {judged(ev['at'][lr]['acc'])}"
        if not t.loc[(lr, "leaky_relu"), "diverged"] else
        f"lr {num(lr)}: ReLU {pct(t.loc[(lr, 'relu'), 'dead'], 0)} units dead, leaky ReLU "
        f"diverged in {int(t.loc[(lr, 'leaky_relu'), 'diverged'])} of "
        f"{int(t.loc[(lr, 'leaky_relu'), 'runs'])} runs" for lr in sorted(ev["at"])))


def tf_07(results_dir=None) -> Key:
    sp = sparsity(results_dir)
    pairs = tf07_pairs(sp)
    share = overall_sparsity(sp)
    share = share[share["threshold"] == NEAR_ZERO].groupby("penalty")["fraction"].mean()
    return Key(f"weights below {num(NEAR_ZERO)}: " + "; ".join(
        f"{p['l1']} {pct(share[p['l1']])} against {p['l2']} {pct(share[p['l2']])} "
        f"(accuracy {judged(p['acc'])})" for p in pairs))


PAIRS = (("resnet20", "plain20"), ("resnet56", "plain56"))


def landscape_runs(results_dir=None) -> pd.DataFrame:
    """The landscape runs, one per trained network (by model), with the trained run's
    epochs; columns from the notebook's summary (hessian_minimum, minimum_loss, ...)."""
    land = results.runs(experiment="landscape", results=results_dir)
    trained = results.runs(experiment="resnet-pair", results=results_dir).set_index("key")
    return land.assign(epochs=land["trained_run"].map(trained["epochs"])).set_index("model")


def tf10_pairs(land: pd.DataFrame) -> list[dict]:
    """Each ResNet with its plain twin: the ratio of their top Hessian eigenvalues at the
    minimum (plain / ResNet) and their training losses there (same images)."""
    return [{"resnet": r, "plain": p,
             "sharpness": land.loc[p, "hessian_minimum"] / land.loc[r, "hessian_minimum"],
             "loss_resnet": land.loc[r, "minimum_loss"], "loss_plain": land.loc[p, "minimum_loss"],
             "degraded": land.loc[p, "minimum_loss"] > 1.1 * land.loc[r, "minimum_loss"]}
            for r, p in PAIRS if r in land.index and p in land.index]


def tf10_verdict(land: pd.DataFrame) -> bool | None:
    """The shortcuts' first effect is the one He et al. introduced them for: without them the
    deeper network fits its training set worse (training loss at the minimum over 10%
    higher, at the deepest pair measured). Where that holds, "introduced to smooth the loss
    surface" mistakes a later explanation for the purpose: False. Where the plain twin fits
    as well, the evidence would not show He et al.'s reason at this depth, and the verdict
    must be looked at again (True here makes the chapter stop). None: trained too briefly."""
    pairs = tf10_pairs(land)
    if not pairs or land["epochs"].min() < MIN_EPOCHS_TO_JUDGE:
        return None
    return not pairs[-1]["degraded"]


def tf_10(results_dir=None) -> Key:
    land = landscape_runs(results_dir)
    name = plots.VALUE_NAMES["model"]
    top = land["hessian_minimum"]
    return Key("; ".join(
        f"top Hessian eigenvalue {name[p['resnet']]} {num(top[p['resnet']])}, "
        f"{name[p['plain']]} {num(top[p['plain']])}; training loss {num(p['loss_resnet'])} "
        f"against {num(p['loss_plain'])}" for p in tf10_pairs(land)))


def tf_08(results_dir=None) -> Key:
    from analysis import flops

    measured = results.table("latency", experiment="depthwise-latency", results=results_dir)
    lat = measured[measured["flag"].isna() | measured["flag"].eq("")]  # flagged: no result
    if not (lat["scope"] == "layer").any():  # as the chapter: no sane timing, no result
        raise results.ResultsMissing("every layer timing of depthwise-latency was flagged")
    layers = flops.separable_table()
    macs = ((layers["count"] * layers["macs_standard"]).sum()
            / (layers["count"] * layers["macs_separable"]).sum())
    overall = all_layers_speedup(lat, layers["shape"])
    best = (overall["speedup"].max() if len(overall)
            else lat.loc[lat["scope"] == "layer", "speedup"].max())
    return Key(f"MAC ratio {times(macs, 2)} over all {int(layers['count'].sum())} layers, best "
               f"measured speedup {times(best)}")


def tf_09(results_dir=None) -> Key:
    from analysis import flops

    v = flops.squeezenet_variants().set_index("variant")
    sq, alex = v.loc["SqueezeNet 1.0"], v.loc["AlexNet"]
    early = v.loc["SqueezeNet, early downsampling", "params"] == sq["params"]
    return Key(f"{times(alex['params'] / sq['params'])} fewer parameters than AlexNet, "
               f"{times(sq['macs'] / alex['macs'], 2)} its MACs; pooling early leaves the "
               f"parameters {'unchanged' if early else 'changed'}")


KEYS = {"lab1-a": lab1_a, "lab1-b": lab1_b, "lab1-c": lab1_c, "lab1-d": lab1_d,
        "lab1-g": lab1_g, "lab1-h": lab1_h, "lab2-a": lab2_a, "lab2-b-bn": lab2_b_bn,
        "lab2-b-lr": lab2_b_lr, "lab2-b-swish": lab2_b_swish, "lab2-c-lr": lab2_c_lr,
        "lab2-c-l2": lab2_c_l2, "lab2-c-l1": lab2_c_l1, "lab3": lab3, "tf-01": tf_01,
        "tf-02": tf_02, "tf-03": tf_03, "tf-04": tf_04, "tf-05": tf_05, "tf-06": tf_06,
        "tf-07": tf_07, "tf-08": tf_08, "tf-09": tf_09, "tf-10": tf_10}
