"""Findings of Part 1: the true/false statements tf-01 to tf-07 and tf-10 (the two cost
analyses, tf-08 and tf-09, are in `costs`).

Each statement has a dataclass of what its section quotes, with a `verdict` its rule
gives (True, False, or None: undecided), the rule as a plain function of made-up-able
data, and a loader that gathers the runs. Every rule is stated once more, in words, in
the statement's `rule:` in book/answers.yml.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import results
from analysis.findings import ACC, MARGIN, MIN_EPOCHS_TO_JUDGE, Finding
from analysis.plots import VALUE_NAMES, count, judged, num, pct, pts, times
from analysis.results import Difference, Verdict

PROBE_IMAGES = 1000  # validation images the BN statistics and the eager demo look at
NEAR_ZERO_MEAN = 0.1  # a channel mean within 0.1 of its own std counts as zero
RETAINED = 0.5  # noisy BN "keeps the help" when it keeps at least half of BN's gain
SPIKE_WINDOW = 50  # a spike is judged against the 50 steps before it
SPIKE_MADS = 3.0  # ... when its loss exceeds their median by 3 robust standard deviations
DEAD_MIN = 0.10  # a network "dies" at a rate where at least 10% of its hidden units are dead
NEAR_ZERO = 1e-3  # |w| below this counts as a zero weight
SPARSITY_THRESHOLDS = (NEAR_ZERO / 10, NEAR_ZERO, NEAR_ZERO * 10)
MAD_TO_STD = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def probe_images(n: int = PROBE_IMAGES):
    """The first `n` validation images, normalised as the networks saw them, and labels."""
    from analysis import data
    from analysis.findings.labs import cifar

    c = cifar()
    return data.normalize(c.val_x[:n], c.mean, c.std), c.val_y[:n]


def trained_enough(runs: pd.DataFrame) -> bool:
    return runs["epochs"].max() >= MIN_EPOCHS_TO_JUDGE


# ---------------------------------------------------------------- training dynamics

def spikes(steps: pd.DataFrame, by: list[str], window: int = SPIKE_WINDOW,
           mads: float = SPIKE_MADS) -> pd.DataFrame:
    """Per run (`by` + seed): loss spikes per 1,000 steps after the first epoch, and the
    loss's typical step-to-step swing.

    A spike is a step whose loss exceeds the median of the `window` steps before it by more
    than `mads` robust standard deviations of those steps (1.4826 x their median absolute
    deviation): set against the batch-to-batch noise of the run itself, so that an ordinary
    run has a few and a run that lurches has many. A non-finite loss counts as a spike.
    The swing is the median over those steps of |log(loss_t / loss_t-1)|: how much the loss
    moves from one batch to the next, in proportion."""
    rows = []
    for keys, d in steps.sort_values(["epoch", "step"]).groupby(by + ["seed"]):
        loss = d["loss"].astype(float).reset_index(drop=True)
        before = loss.rolling(window, min_periods=window)
        median = before.median().shift(1)
        mad = before.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True).shift(1)
        later = (d["epoch"] > 1).to_numpy()
        jump = (loss > median + mads * MAD_TO_STD * mad) | loss.isna()
        n = int(later.sum())
        logs = np.log(loss[later].to_numpy())
        swing = float(np.nanmedian(np.abs(np.diff(logs)))) if n > 1 else math.nan
        rows.append({**dict(zip(by + ["seed"], keys, strict=True)),
                     "spikes": 1000 * int((jump.to_numpy() & later).sum()) / n if n else math.nan,
                     "swing": swing})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tf-01

@dataclass(frozen=True)
class TF01(Finding):
    """Batch norm's statistics inside the trained BN-LeNets, and whether BN still helps
    when its output distribution is made to shift again (noisy BN)."""

    stats: pd.DataFrame = field(compare=False)  # probes.batchnorm_stats of every BN run
    gain: Difference  # final accuracy, BN minus none
    noisy_gain: Difference  # noisy BN minus none
    noisy_vs_bn: Difference  # noisy BN minus BN
    accuracy: dict[str, float] = field(compare=False)  # none, BN, noisy BN -> mean final acc
    noise: float  # the noise strength
    verdict: bool | None

    def share(self, stage: str) -> float:
        """Channels whose mean at `stage` (in, norm, out, act) is within NEAR_ZERO_MEAN of
        that channel's standard deviation."""
        return near_zero_share(self.stats, stage)

    @property
    def retained(self) -> float:
        """The share of BN's gain that noisy BN keeps."""
        return self.noisy_gain.diff / self.gain.diff if self.gain.diff else math.nan

    @property
    def key(self) -> str:
        return (f"zero-mean channels: {pct(self.share('out'), 0)} at BN's output, "
                f"{pct(self.share('act'), 0)} after the ReLU; BN minus none "
                f"{judged(self.gain)}; noisy BN minus BN {judged(self.noisy_vs_bn)}")

    @property
    def headline(self) -> str:
        return f"noisy BN keeps {pct(self.retained, 0)} of BN's gain"


def near_zero_share(stats: pd.DataFrame, stage: str) -> float:
    return float((stats[f"{stage}_mean"].abs() <= NEAR_ZERO_MEAN * stats[f"{stage}_std"]).mean())


def tf01_verdict(gain: Difference, noisy_gain: Difference, noisy_vs_bn: Difference,
                 epochs: int) -> bool | None:
    """Noisy BN tests the "since": True if BN helps (beyond noise) and putting the shift
    back takes most of that help away (noisy BN below BN beyond noise, keeping under half
    of BN's gain); False if BN does not help (below no BN beyond noise), or noisy BN keeps
    at least half of BN's gain and still beats no BN beyond noise; None otherwise."""
    if epochs < MIN_EPOCHS_TO_JUDGE:
        return None
    if gain.verdict is Verdict.LOWER:
        return False
    if gain.verdict is not Verdict.HIGHER:
        return None
    retained = noisy_gain.diff / gain.diff
    if noisy_vs_bn.verdict is Verdict.LOWER and retained < RETAINED:
        return True
    if retained >= RETAINED and noisy_gain.verdict is Verdict.HIGHER:
        return False
    return None


def bn_kind(runs: pd.DataFrame) -> pd.Series:
    """lenet-bn's runs (or metrics) by kind: none, BN or noisy (BN with bn_noise > 0)."""
    noisy = runs["bn_noise"].fillna(0) > 0
    return pd.Series(np.where(~runs["batch_norm"].astype(bool), "none",
                              np.where(noisy, "noisy", "BN")), index=runs.index)


def tf01_from(runs: pd.DataFrame, stats: pd.DataFrame) -> TF01:
    """`runs`: lenet-bn's runs; `stats`: `probes.batchnorm_stats` of its plain BN runs."""
    runs = runs.assign(kind=bn_kind(runs))
    gain = results.difference(runs, "kind", "BN", "none", ACC)
    noisy_gain = results.difference(runs, "kind", "noisy", "none", ACC)
    noisy_vs_bn = results.difference(runs, "kind", "noisy", "BN", ACC)
    return TF01(stats, gain, noisy_gain, noisy_vs_bn, runs.groupby("kind")[ACC].mean().to_dict(),
                float(runs["bn_noise"].max()),
                tf01_verdict(gain, noisy_gain, noisy_vs_bn, int(runs["epochs"].max())))


def tf_01(results_dir=None) -> TF01:
    from analysis import probes

    runs = results.runs(experiment="lenet-bn", results=results_dir)
    plain_bn = runs[(bn_kind(runs) == "BN") & (runs["status"] == "finished")]
    x, _ = probe_images()
    stats = pd.concat([probes.batchnorm_stats(results.trained_model(run, results_dir), x)
                       .assign(seed=run["seed"]) for _, run in plain_bn.iterrows()],
                      ignore_index=True)
    return tf01_from(runs, stats)


# ---------------------------------------------------------------- tf-02

@dataclass(frozen=True)
class TF02(Finding):
    """Eager execution watched live: a hook mid-forward, a hook mid-backward, a graph per
    input."""

    demo: dict = field(compare=False)  # probes.eager_demo
    graphs: pd.DataFrame = field(compare=False)  # probes.loop_graphs
    verdict: bool | None

    @property
    def key(self) -> str:
        return ("graph nodes for " + ", ".join(
            f"{count(int(s), 'loop step')}: {int(n)}"
            for s, n in zip(self.graphs["loop steps"], self.graphs["graph nodes"], strict=True))
            + f"; the gradient hook ran with {self.demo['leaf_grads_at_hook']} of "
              f"{self.demo['parameters']} weight tensors' gradients computed")

    @property
    def headline(self) -> str:
        return f"graphs of {', '.join(str(int(n)) for n in self.graphs['graph nodes'])} nodes"


def tf02_verdict(demo: dict, graphs: pd.DataFrame) -> bool:
    """True when all three demonstrations work: the gradient captured mid-backward equals
    autograd's, backward was under way when it was captured (some but not all weight
    gradients computed), and inputs that loop differently record graphs of different sizes."""
    return bool(demo["matches"] and 0 < demo["leaf_grads_at_hook"] < demo["parameters"]
                and graphs["graph nodes"].is_unique)


def tf_02(results_dir=None) -> TF02:
    import torch

    from analysis import probes
    from analysis.models import LeNet5

    torch.manual_seed(0)
    x, y = probe_images(4)
    demo = probes.eager_demo(LeNet5(), x, y)
    graphs = probes.loop_graphs()
    return TF02(demo, graphs, tf02_verdict(demo, graphs))


# ---------------------------------------------------------------- tf-03

@dataclass(frozen=True)
class TF03(Finding):
    """Augmentations that break the label (digits) or fit no test image (CIFAR-10)."""

    digits: pd.DataFrame = field(compare=False)  # digits-augment's runs
    vs_none: dict[str, Difference] = field(compare=False)  # digits: augmentation - none
    cifar: dict[str, Difference] = field(compare=False)  # CIFAR: "vflip", "padding 6" - base
    cifar_settings: dict[str, float] = field(compare=False)  # vflip_p, crop_padding used
    verdict: bool | None

    @property
    def mixups(self) -> pd.DataFrame:
        """Test 6s called 9 and 9s called 6, per run on average, per augmentation."""
        return self.digits.groupby("augmentation")[["six_as_nine", "nine_as_six"]].mean()

    @property
    def key(self) -> str:
        acc = self.digits.groupby("augmentation")["test_acc"].mean()
        parts = [f"digits {VALUE_NAMES['augmentation'][a]} {judged(d)}"
                 for a, d in self.vs_none.items()]
        parts += [f"CIFAR-10 {name} {judged(d)}" for name, d in self.cifar.items()]
        return f"digits without augmentation {pct(acc['none'])}; " + "; ".join(parts)

    @property
    def headline(self) -> str:
        worst = min([*self.vs_none.values(), *self.cifar.values()], key=lambda d: d.diff)
        return f"down to {pts(worst.diff)}"


def tf03_verdict(differences: list[Difference], epochs: int) -> bool | None:
    """False once some augmentation lowers accuracy beyond noise; True if every one raises
    it beyond noise; None otherwise (or trained too briefly)."""
    if epochs < MIN_EPOCHS_TO_JUDGE:
        return None
    if any(d.verdict is Verdict.LOWER for d in differences):
        return False
    return True if all(d.verdict is Verdict.HIGHER for d in differences) else None


def augment_setting(frame: pd.DataFrame) -> pd.Series:
    """lenet-more-augment's runs (or metrics) by setting: the protocol, "upside down" (with
    vertical flips) or "larger crops" (the larger padding)."""
    return pd.Series(np.where(frame["vflip_p"] > frame["vflip_p"].min(), "upside down",
                              np.where(frame["crop_padding"] > frame["crop_padding"].min(),
                                       "larger crops", "protocol")), index=frame.index)


def tf03_from(digits: pd.DataFrame, more: pd.DataFrame) -> TF03:
    """`digits`: digits-augment's runs; `more`: lenet-more-augment's runs."""
    vs_none = {a: results.difference(digits, "augmentation", a, "none", "test_acc")
               for a in ("vflip", "rot180")}
    more = more.assign(setting=augment_setting(more))
    cifar = {s: results.difference(more, "setting", s, "protocol", ACC)
             for s in ("upside down", "larger crops")}
    epochs = int(min(digits["epochs"].max(), more["epochs"].max()))
    return TF03(digits, vs_none, cifar,
                {"vflip_p": float(more["vflip_p"].max()),
                 "crop_padding": float(more["crop_padding"].max()),
                 "protocol_padding": float(more["crop_padding"].min())},
                tf03_verdict([*vs_none.values(), *cifar.values()], epochs))


def tf_03(results_dir=None) -> TF03:
    return tf03_from(results.runs(experiment="digits-augment", results=results_dir),
                     results.runs(experiment="lenet-more-augment", results=results_dir))


# ---------------------------------------------------------------- tf-04

@dataclass(frozen=True)
class TF04(Finding):
    """Adam's epsilon: the step size as it grows, and epsilon 1 against the default at
    learning rates where each can work."""

    steps: pd.DataFrame = field(compare=False)  # per eps and epoch: mean update_ratio (lr 1e-3)
    sweep: pd.Series = field(compare=False)  # eps -> mean final accuracy at lr 1e-3
    cases: pd.DataFrame = field(compare=False)  # per (eps, lr): final acc, spikes, swing, spread
    best_lr: dict[float, float]  # eps -> its better learning rate
    accuracy: Difference  # eps 1 at its better rate minus 1e-8 at its better rate
    swing: Difference  # the same for the loss's step-to-step swing
    verdict: bool | None

    @property
    def low(self) -> float:
        return min(self.best_lr)

    @property
    def high(self) -> float:
        return max(self.best_lr)

    @property
    def step_ratio(self) -> float:
        """How many times smaller the first epoch's steps are at the largest epsilon."""
        first = self.steps[self.steps["epoch"] == self.steps["epoch"].min()].set_index(
            "adam_eps")["update_ratio"]
        return float(first[first.index.min()] / first[first.index.max()])

    @property
    def key(self) -> str:
        return (f"eps {num(self.high)} (lr {num(self.best_lr[self.high])}) minus eps "
                f"{num(self.low)} (lr {num(self.best_lr[self.low])}): final accuracy "
                f"{judged(self.accuracy, margin=MARGIN)}, loss swing "
                f"{judged(self.swing, unit=pct)}; at lr 1e-3, eps {num(self.high)} takes "
                f"{times(self.step_ratio, 0)} smaller steps")

    @property
    def headline(self) -> str:
        return f"eps 1: accuracy {pts(self.accuracy.diff)}"


def tf04_verdict(accuracy: Difference, swing: Difference, epochs: int) -> bool | None:
    """Raising epsilon to 1.0 is worth it only if it buys stability at no cost: True if
    epsilon 1 (at its better learning rate) is not less accurate than 1e-8 (at its better
    rate) beyond noise and its loss swings less from batch to batch beyond noise; False if
    it is less accurate beyond noise, or its loss swings no less; None if trained too
    briefly, or the swing did not vary at all."""
    if epochs < MIN_EPOCHS_TO_JUDGE:
        return None
    if accuracy.verdict is Verdict.LOWER:
        return False
    if swing.verdict is Verdict.UNJUDGED:
        return None
    return swing.verdict is Verdict.LOWER


def tf04_cases(runs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    motion = spikes(steps, ["adam_eps", "lr"])
    by = ["adam_eps", "lr"]
    return (runs.groupby(by).agg(final=(ACC, "mean"), spread=(ACC, "std"),
                                 runs=("seed", "size"),
                                 diverged=("status", lambda s: int((s == "diverged").sum())))
            .join(motion.groupby(by)[["spikes", "swing"]].mean()))


def tf04_from(sweep_runs, sweep_metrics, runs, steps) -> TF04:
    cases = tf04_cases(runs, steps)
    best_lr = {eps: float(cases.loc[eps, "final"].idxmax())
               for eps in cases.index.get_level_values("adam_eps").unique()}
    lo, hi = min(best_lr), max(best_lr)
    pick = runs[[best_lr[e] == lr for e, lr in zip(runs["adam_eps"], runs["lr"], strict=True)]]
    motion = spikes(steps, ["adam_eps", "lr"])
    motion = motion[[best_lr[e] == lr for e, lr in zip(motion["adam_eps"], motion["lr"],
                                                       strict=True)]]
    accuracy = results.difference(pick, "adam_eps", hi, lo, ACC)
    swing = results.difference(motion, "adam_eps", hi, lo, "swing")
    ratio = sweep_metrics.groupby(["adam_eps", "epoch"], as_index=False)["update_ratio"].mean()
    return TF04(ratio, sweep_runs.groupby("adam_eps")[ACC].mean(), cases, best_lr, accuracy,
                swing, tf04_verdict(accuracy, swing, int(runs["epochs"].max())))


def tf_04(results_dir=None) -> TF04:
    return tf04_from(results.runs(experiment="lenet-adam-eps", results=results_dir),
                     results.table("metrics", experiment="lenet-adam-eps", results=results_dir),
                     results.runs(experiment="lenet-adam-stability", results=results_dir),
                     results.table("steps", experiment="lenet-adam-stability",
                                   results=results_dir))


# ---------------------------------------------------------------- tf-05

CELLS = {(False, False): "neither", (True, False): "L2 only", (False, True): "dropout only",
         (True, True): "L2 + dropout"}


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """lenet-l2-dropout's runs (or metrics) named by their cell of the 2x2 grid."""
    return runs.assign(cell=[CELLS[(wd > 0, p > 0)] for wd, p in
                             zip(runs["weight_decay"], runs["dropout"], strict=True)])


@dataclass(frozen=True)
class TF05(Finding):
    """The 2x2 grid of L2 and dropout, where LeNet-5 overfits."""

    runs: pd.DataFrame = field(compare=False)  # with `cell`
    ci: pd.DataFrame = field(compare=False)  # per cell: mean final accuracy and its interval
    both_vs: dict[str, Difference] = field(compare=False)  # L2 + dropout minus each cell
    lost: int  # seeds on which the combination scored below the better single method
    seeds: int
    gap: dict[str, float] = field(compare=False)  # train - validation at the last epoch
    verdict: bool | None

    @property
    def key(self) -> str:
        return (", ".join(f"{c} {pct(self.ci.loc[c, 'mean'])}" for c in CELLS.values())
                + f"; the combination lost to the better single method on {self.lost} of "
                  f"{count(self.seeds, 'seed')}")

    @property
    def headline(self) -> str:
        return f"lost on {self.lost} of {count(self.seeds, 'seed')}"


def tf05_losses(runs: pd.DataFrame) -> tuple[int, int]:
    """Seeds on which L2 + dropout scored below the better of the two alone, and seeds."""
    acc = runs.pivot_table(index="seed", columns="cell", values=ACC)
    better = acc[["L2 only", "dropout only"]].max(axis=1)
    return int((acc["L2 + dropout"] < better).sum()), len(acc)


def tf05_verdict(both_vs: dict[str, Difference], lost: int, epochs: int) -> bool | None:
    """A guarantee holds only if L2 + dropout beat each single method beyond noise and the
    better of them on every seed: True then, False otherwise (None: trained too briefly)."""
    if epochs < MIN_EPOCHS_TO_JUDGE:
        return None
    return lost == 0 and all(both_vs[c].verdict is Verdict.HIGHER
                             for c in ("L2 only", "dropout only"))


def tf05_from(runs: pd.DataFrame, metrics: pd.DataFrame) -> TF05:
    from analysis.findings.labs import last_epoch

    runs = cells(runs)
    both_vs = {c: results.difference(runs, "cell", "L2 + dropout", c, ACC)
               for c in ("neither", "L2 only", "dropout only")}
    lost, seeds = tf05_losses(runs)
    gap = last_epoch(cells(metrics), ["cell"]).groupby("cell")["gap"].mean().to_dict()
    return TF05(runs, results.mean_ci(runs, "cell", ACC, bounded=True).set_index("cell"),
                both_vs, lost, seeds, gap,
                tf05_verdict(both_vs, lost, int(runs["epochs"].max())))


def tf_05(results_dir=None) -> TF05:
    return tf05_from(results.runs(experiment="lenet-l2-dropout", results=results_dir),
                     results.table("metrics", experiment="lenet-l2-dropout",
                                   results=results_dir))


# ---------------------------------------------------------------- tf-06

LENET_UNITS = {"dead_conv1": 6, "dead_conv2": 16, "dead_fc3": 120, "dead_fc4": 84}


def dead_share(metrics: pd.DataFrame) -> pd.Series:
    """The share of dead hidden units of LeNet-5 (all four hidden layers pooled, weighted by
    their units) per row of a metrics table."""
    cols = [c for c in LENET_UNITS if c in metrics]
    return sum(metrics[c] * LENET_UNITS[c] for c in cols) / sum(LENET_UNITS[c] for c in cols)


@dataclass(frozen=True)
class TF06(Finding):
    """ReLU against leaky ReLU across learning rates: dead units, and where each stops
    training."""

    table: pd.DataFrame = field(compare=False)  # per (lr, activation): see tf06_table
    at: dict = field(compare=False)  # lr -> {"acc", "dead", "spikes"}: leaky minus ReLU
    stable: dict[str, float]  # activation -> largest rate at which every seed trains
    fixes: bool | None  # leaky ReLU has fewer dead units (None: ReLU never died)
    less_stable: bool
    verdict: bool | None

    def stable_text(self, activation: str) -> str:
        rate = self.stable[activation]
        return "none" if math.isnan(rate) else num(rate)

    @property
    def key(self) -> str:
        t = self.table
        dying = [lr for lr in sorted(self.at) if t.loc[(lr, "relu"), "dead"] >= DEAD_MIN]
        dead = (f"at lr {num(dying[0])} ReLU {pct(t.loc[(dying[0], 'relu'), 'dead'], 0)} of "
                f"units dead, leaky ReLU {pct(t.loc[(dying[0], 'leaky_relu'), 'dead'], 0)}"
                if dying else "ReLU's units never died")
        return (f"{dead}; the largest rate at which every seed trains: ReLU "
                f"{self.stable_text('relu')}, leaky ReLU {self.stable_text('leaky_relu')}")

    @property
    def headline(self) -> str:
        return (f"trains up to lr {self.stable_text('relu')} (ReLU), "
                f"{self.stable_text('leaky_relu')} (leaky)")


def tf06_table(runs: pd.DataFrame, metrics: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Per learning rate and activation: runs, diverged and collapsed runs, trained (every
    seed finite and above chance), mean final accuracy, its spread over seeds (std), the
    share of dead hidden units at the last epoch, loss spikes per 1,000 steps."""
    last = metrics.sort_values("epoch").groupby(["activation", "lr", "seed"]).tail(1)
    last = last.assign(dead=dead_share(last))
    runs = runs.assign(failed=results.failed(runs),
                       collapsed=results.failed(runs) & (runs["status"] != "diverged"))
    by = ["lr", "activation"]
    motion = spikes(steps, ["activation", "lr"])
    table = (runs.groupby(by).agg(runs=("seed", "size"),
                                  diverged=("status", lambda s: int((s == "diverged").sum())),
                                  collapsed=("collapsed", "sum"), failed=("failed", "sum"),
                                  final=(ACC, "mean"), spread=(ACC, "std"))
             .join(last.groupby(by)["dead"].mean())
             .join(motion.groupby(by)["spikes"].mean()))
    table["trained"] = table["failed"] == 0
    return table


def stable_rate(table: pd.DataFrame, activation: str) -> float:
    """The largest learning rate at which every seed keeps a finite loss and beats chance."""
    t = table.xs(activation, level="activation")
    ok = t.index[t["trained"]]
    return float(ok.max()) if len(ok) else math.nan


def tf06_verdict(table: pd.DataFrame, at: dict, epochs: int) -> tuple[bool | None, bool | None,
                                                                      bool]:
    """(verdict, fixes, less_stable). Fixes: at some rate where ReLU loses at least DEAD_MIN
    of its units, leaky ReLU has fewer dead units beyond noise (None when there is no such
    rate with leaky ReLU's dead units measured: nothing to fix, or no evidence). Less
    stable: leaky ReLU stops training at a smaller rate than ReLU, or spikes more beyond
    noise at a rate where both train. True if it fixes and is less stable; False if it
    fixes and is not less stable, or does not fix; None if fixing is undecided, or the runs
    trained too briefly."""
    rates = sorted(at)
    dying = [lr for lr in rates if table.loc[(lr, "relu"), "dead"] >= DEAD_MIN]
    # Where leaky ReLU diverged at once, its dead units were never measured: no evidence.
    measured = [at[lr]["dead"].verdict for lr in dying
                if at[lr]["dead"].verdict is not Verdict.UNJUDGED]
    fixes = (any(v is Verdict.LOWER for v in measured) if measured else None)
    both = [lr for lr in rates if table.loc[(lr, "relu"), "trained"]
            and table.loc[(lr, "leaky_relu"), "trained"]]
    relu, leaky = stable_rate(table, "relu"), stable_rate(table, "leaky_relu")
    earlier = (not math.isnan(relu)) and (math.isnan(leaky) or leaky < relu)
    less_stable = earlier or any(at[lr]["spikes"].verdict is Verdict.HIGHER for lr in both)
    if epochs < MIN_EPOCHS_TO_JUDGE or fixes is None:
        return None, fixes, less_stable
    return bool(fixes and less_stable), fixes, less_stable


def tf06_from(runs: pd.DataFrame, metrics: pd.DataFrame, steps: pd.DataFrame) -> TF06:
    table = tf06_table(runs, metrics, steps)
    last = metrics.sort_values("epoch").groupby(["activation", "lr", "seed"]).tail(1)
    last = last.assign(dead=dead_share(last))
    motion = spikes(steps, ["activation", "lr"])
    at = {lr: {"acc": results.difference(runs[runs["lr"] == lr], "activation", "leaky_relu",
                                         "relu", ACC),
               "dead": results.difference(last[last["lr"] == lr], "activation", "leaky_relu",
                                          "relu", "dead"),
               "spikes": results.difference(motion[motion["lr"] == lr], "activation",
                                            "leaky_relu", "relu", "spikes")}
          for lr in sorted(runs["lr"].unique())}
    verdict, fixes, less_stable = tf06_verdict(table, at, int(runs["epochs"].max()))
    return TF06(table, at, {a: stable_rate(table, a) for a in ("relu", "leaky_relu")}, fixes,
                less_stable, verdict)


def tf_06(results_dir=None) -> TF06:
    return tf06_from(results.runs(experiment="lenet-leaky", results=results_dir),
                     results.table("metrics", experiment="lenet-leaky", results=results_dir),
                     results.table("steps", experiment="lenet-leaky", results=results_dir))


# ---------------------------------------------------------------- tf-07 and lab2-c-l1

def penalty(row) -> str:
    """A Lab 2 L1/L2 run's penalty: 'L1 0.0001', 'L2 0.001' or 'none'."""
    if row["l1"] > 0:
        return f"L1 {row['l1']:g}"
    return f"L2 {row['weight_decay']:g}" if row["weight_decay"] > 0 else "none"


def strength(p: str) -> float:
    return float(p.split()[1]) if " " in p else 0.0


@dataclass(frozen=True)
class Sparsity(Finding):
    """L1 against L2: the share of near-zero weights at matched accuracy (tf-07, and Lab 2's
    L1 question, lab2-c-l1)."""

    layers: pd.DataFrame = field(compare=False)  # per run, layer and threshold: fraction
    overall: pd.DataFrame = field(compare=False)  # per run (penalty, seed) and threshold
    accuracy: pd.Series = field(compare=False)  # penalty -> mean final accuracy
    pairs: tuple[dict, ...] = field(compare=False)  # {l1, l2, acc, sparse}: matched pairs
    verdict: bool | None

    def share(self, p: str, threshold: float = NEAR_ZERO) -> float:
        o = self.overall
        return float(o[(o["penalty"] == p) & (o["threshold"] == threshold)]["fraction"].mean())

    @property
    def penalties(self) -> list[str]:
        return sorted(self.accuracy.index, key=lambda p: (p.split()[0], strength(p)))

    @property
    def key(self) -> str:
        return f"weights below {num(NEAR_ZERO)}: " + "; ".join(
            f"{p['l1']} {pct(self.share(p['l1']))} against {p['l2']} {pct(self.share(p['l2']))} "
            f"(accuracy {judged(p['acc'], margin=MARGIN)})" for p in self.pairs)

    @property
    def headline(self) -> str:
        p = self.pairs[0]
        return f"{pct(self.share(p['l1']))} vs {pct(self.share(p['l2']))} near zero"

    @property
    def short(self) -> str:
        sparser = [p["sparse"].verdict for p in comparable(self.pairs)]
        if not sparser:
            return "No L1 setting matched an L2 setting's accuracy"
        if all(v is Verdict.HIGHER for v in sparser):
            return "L1 leaves more weights near zero than L2 at the same accuracy"
        if any(v is Verdict.LOWER for v in sparser):
            return "L1 leaves fewer weights near zero than L2 at the same accuracy"
        return "L1 and L2 leave about as many weights near zero (inconclusive)"


def matched_penalties(accuracy: pd.Series) -> list[tuple[str, str]]:
    """Each L1 setting with the L2 setting of closest mean accuracy."""
    l1 = sorted((p for p in accuracy.index if p.startswith("L1")), key=strength)
    l2 = sorted((p for p in accuracy.index if p.startswith("L2")), key=strength)
    return [(a, min(l2, key=lambda b: abs(accuracy[b] - accuracy[a]))) for a in l1] if l2 else []


def comparable(pairs) -> list[dict]:
    """The matched pairs at the same accuracy: their final accuracies equivalent, the whole
    interval of the difference within +-MARGIN ("within noise" is no such claim)."""
    return [p for p in pairs if p["acc"].equivalent(MARGIN)]


def tf07_verdict(pairs, epochs: int) -> bool | None:
    """Among the matched pairs at the same accuracy (`comparable`): True if L1 has more
    weights below NEAR_ZERO beyond noise in every one, False if fewer in some one, None
    otherwise (no comparable pair, inconclusive, or trained too briefly)."""
    verdicts = [p["sparse"].verdict for p in comparable(pairs)]
    if epochs < MIN_EPOCHS_TO_JUDGE or not verdicts:
        return None
    if any(v is Verdict.LOWER for v in verdicts):
        return False
    return True if all(v is Verdict.HIGHER for v in verdicts) else None


def sparsity_from(runs: pd.DataFrame, states: dict) -> Sparsity:
    """`runs`: lenet-l1's finished runs; `states`: key -> the run's final state_dict."""
    from analysis import probes

    runs = runs.assign(penalty=runs.apply(penalty, axis=1))
    layers = pd.concat([probes.weight_sparsity(states[r["key"]], SPARSITY_THRESHOLDS)
                        .assign(penalty=r["penalty"], seed=r["seed"])
                        for _, r in runs.iterrows()], ignore_index=True)
    overall = (layers.assign(below=layers["fraction"] * layers["weights"])
               .groupby(["penalty", "seed", "threshold"], as_index=False)[["below", "weights"]]
               .sum().assign(fraction=lambda d: d["below"] / d["weights"]))
    accuracy = runs.groupby("penalty")[ACC].mean()
    near = overall[overall["threshold"] == NEAR_ZERO]
    pairs = tuple({"l1": a, "l2": b, "acc": results.difference(runs, "penalty", a, b, ACC),
                   "sparse": results.difference(near, "penalty", a, b, "fraction")}
                  for a, b in matched_penalties(accuracy))
    return Sparsity(layers, overall, accuracy, pairs,
                    tf07_verdict(pairs, int(runs["epochs"].max())))


def sparsity_finding(results_dir=None) -> Sparsity:
    runs = results.runs(experiment="lenet-l1", results=results_dir)
    runs = runs[runs["status"] == "finished"]
    return sparsity_from(runs, {k: results.load_weights(k, results_dir) for k in runs["key"]})


def weight_sample(runs: pd.DataFrame, results_dir=None, per_layer: int = 4000) -> pd.DataFrame:
    """For the histograms: up to `per_layer` conv and fc weights per layer and run, evenly
    spaced through each tensor: penalty, seed, layer (conv1, conv2, fc3..., as in the cost
    tables) and weight."""
    rows = []
    for _, run in runs[runs["status"] == "finished"].iterrows():
        position = 0
        for name, w in results.load_weights(run["key"], results_dir).items():
            if name.endswith("weight") and w.dim() > 1:
                position += 1
                layer = f"{'conv' if w.dim() == 4 else 'fc'}{position}"
                rows += [{"penalty": penalty(run), "seed": run["seed"], "layer": layer,
                          "weight": v}
                         for v in w.flatten()[:: max(1, w.numel() // per_layer)].tolist()]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tf-10

PAIRS = (("resnet20", "plain20"), ("resnet56", "plain56"))  # (with shortcuts, without)
DEGRADATION = (("plain8", "plain20"), ("plain20", "plain56"))  # (shallower, deeper) plain nets
FIT = "clean_train_loss"  # how well a run fits its training images: eval mode, no augmentation
SHARPNESS = ("invariant", "raw")  # the top eigenvalue of D H D, and of the Hessian itself


def factor(log_ratio: float) -> str:
    """A difference of logarithms as the ratio it stands for: 0.693 -> '2×', 3 -> '20.1×'."""
    return f"{num(math.exp(log_ratio))}×"


@dataclass(frozen=True)
class TF10(Finding):
    """Why shortcuts were introduced is history, which decides (He et al. 2016: against the
    degradation of deeper plain networks); the runs illustrate it: the degradation itself, and
    the later view of it (Li et al. 2018), the sharpness of ResNets and plain nets compared
    at the same training loss and at initialisation."""

    curves: pd.DataFrame = field(compare=False)  # resnet-pair metrics, per model, seed, epoch
    sharpness: pd.DataFrame = field(compare=False)  # landscape: per model, seed, checkpoint
    init: pd.DataFrame = field(compare=False)  # depth-init: per model and seed
    rescale: pd.DataFrame = field(compare=False)  # landscape: per model, seed and factor c
    degradation: tuple[dict, ...] = field(compare=False)  # {shallow, deep, loss: Difference}
    matched: tuple[dict, ...] = field(compare=False)  # {resnet, plain, level, at, raw, invariant}
    at_init: tuple[dict, ...] = field(compare=False)  # {resnet, plain, raw, invariant}
    epochs: int  # the fewest epochs any training run had
    verdict: bool | None

    @property
    def key(self) -> str:
        name = VALUE_NAMES["model"]
        return "; ".join(
            [f"final training loss, {name[d['deep']]} minus {name[d['shallow']]}: "
             f"{judged(d['loss'], num)}" for d in self.degradation]
            + [f"scale-invariant sharpness at training loss {num(m['level'])}, "
               f"{name[m['plain']]} over {name[m['resnet']]}: {judged(m['invariant'], factor)}"
               for m in self.matched]
            + [f"at initialisation, {name[a['plain']]} over {name[a['resnet']]}: "
               f"{judged(a['invariant'], factor)}" for a in self.at_init])

    @property
    def headline(self) -> str:
        if not self.degradation:
            return "no pair of plain networks of two depths"
        d = self.degradation[0]
        name = VALUE_NAMES["model"]
        return (f"training loss {name[d['deep']]} minus {name[d['shallow']]}: "
                f"{num(d['loss'].diff, 2)}")


def tf10_degradation(curves: pd.DataFrame) -> tuple[dict, ...]:
    """Each pair of DEGRADATION that was trained: the deeper plain net's final training loss
    minus the shallower one's, over seeds (He et al.'s degradation: above zero)."""
    last = curves.sort_values("epoch").groupby(["model", "seed"]).tail(1)
    return tuple({"shallow": s, "deep": d, "loss": results.difference(last, "model", d, s, FIT)}
                 for s, d in DEGRADATION if {s, d} <= set(last["model"]))


def matched_level(sharpness: pd.DataFrame, models) -> float:
    """The lowest training loss that every run of `models` reached at some checkpoint: the
    level at which all of them can be compared."""
    runs = sharpness[sharpness["model"].isin(models)]
    return float(runs.groupby(["model", "seed"])["loss"].min().max())


def value_at(run: pd.DataFrame, level: float, column: str) -> float:
    """`column` of one run where its training loss first fell to `level`, interpolated
    between the checkpoints either side, linearly in the logarithm of the loss (NaN if it
    never fell that far)."""
    run = run.sort_values("epoch")
    loss, value = run["loss"].to_numpy(float), run[column].to_numpy(float)
    reached = np.flatnonzero(loss <= level)
    if not len(reached):
        return math.nan
    i = int(reached[0])
    if i == 0 or loss[i] == loss[i - 1]:
        return float(value[i])
    t = (math.log(loss[i - 1]) - math.log(level)) / (math.log(loss[i - 1]) - math.log(loss[i]))
    return float(value[i - 1] + t * (value[i] - value[i - 1]))


def log_difference(frame: pd.DataFrame, a: str, b: str, column: str) -> Difference:
    """log(column) of model a minus of model b, paired over seeds: the logarithm of their
    ratio (a value <= 0, which has none, is left out)."""
    positive = frame[column].where(frame[column] > 0)
    return results.difference(frame.assign(log=np.log(positive)), "model", a, b, "log")


def tf10_matched(sharpness: pd.DataFrame) -> tuple[dict, ...]:
    """Each pair of PAIRS that was measured, at the lowest training loss all its runs reached
    (`matched_level`): the sharpness of every run there (`at`: model, seed, raw, invariant),
    and the plain net's over the ResNet's, raw and invariant, as Differences of logarithms."""
    found = []
    for resnet, plain in PAIRS:
        if not {resnet, plain} <= set(sharpness["model"]):
            continue
        level = matched_level(sharpness, (resnet, plain))
        at = pd.DataFrame([{"model": m, "seed": s, **{k: value_at(run, level, k)
                                                       for k in SHARPNESS}}
                           for (m, s), run in sharpness[sharpness["model"].isin((resnet, plain))]
                           .groupby(["model", "seed"])])
        found.append({"resnet": resnet, "plain": plain, "level": level, "at": at,
                      **{k: log_difference(at, plain, resnet, k) for k in SHARPNESS}})
    return tuple(found)


def tf10_at_init(init: pd.DataFrame) -> tuple[dict, ...]:
    """Each pair of PAIRS measured untrained: the plain net's sharpness over the ResNet's,
    raw and invariant, as Differences of logarithms over seeds."""
    return tuple({"resnet": r, "plain": p, **{k: log_difference(init, p, r, k)
                                               for k in SHARPNESS}}
                 for r, p in PAIRS if {r, p} <= set(init["model"]))


def tf10_verdict(epochs: int) -> bool | None:
    """History decides: He et al. (2016) introduced shortcuts against the degradation of
    deeper plain networks, and loss surfaces came later (Li et al. 2018), so the statement
    is False whatever the runs show; they only illustrate, and runs trained fewer than
    MIN_EPOCHS_TO_JUDGE epochs leave it undecided (None)."""
    return None if epochs < MIN_EPOCHS_TO_JUDGE else False


def tf10_from(curves: pd.DataFrame, sharpness: pd.DataFrame, init: pd.DataFrame,
              rescale: pd.DataFrame) -> TF10:
    """`curves`: resnet-pair's metrics; `sharpness`: the landscape runs' sharpness tables;
    `init`: depth-init's; `rescale`: the landscape runs' rescale tables."""
    epochs = int(curves.groupby(["model", "seed"])["epoch"].max().min())
    return TF10(curves, sharpness, init, rescale, tf10_degradation(curves),
                tf10_matched(sharpness), tf10_at_init(init), epochs, tf10_verdict(epochs))


def tf_10(results_dir=None) -> TF10:
    def table(name, experiment):
        return results.table(name, experiment=experiment, results=results_dir)

    return tf10_from(table("metrics", "resnet-pair"), table("sharpness", "landscape"),
                     table("sharpness", "depth-init"), table("rescale", "landscape"))


FINDINGS = {"tf-01": tf_01, "tf-02": tf_02, "tf-03": tf_03, "tf-04": tf_04, "tf-05": tf_05,
            "tf-06": tf_06, "tf-07": sparsity_finding, "tf-10": tf_10}
