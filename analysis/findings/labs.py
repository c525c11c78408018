"""Findings of the three labs: LeNet-5 (Labs 1 and 2) and ResNet-20 (Lab 3).

Each question has a dataclass of what its section quotes, a rule where the short answer
depends on the data (a plain function, tested on made-up results), and a loader that
gathers the runs. Accuracies are fractions; the chapters format them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import pandas as pd

from analysis import results
from analysis.findings import ACC, MARGIN, Finding, names
from analysis.plots import VALUE_NAMES, count, judged, num, pct, pts
from analysis.results import Difference, Verdict, phrase

LN10 = math.log(10)
NEAR_LN10 = 0.1  # an initial loss within this of ln 10 is a near-uniform prediction
CHANCE = 0.1  # ten balanced classes
NEAR_CHANCE = 0.05  # an initial accuracy within this of chance
LENET_PARAMS = 62_006  # the course's count for its LeNet-5
OVERFIT_MARGIN = 0.02  # a train - validation gap whose whole interval lies above 2 points
LOSS_TURN = 0.02  # a smoothed validation loss that ends this much above its minimum turned


@functools.cache
def cifar():
    """The CIFAR-10 splits the runs used (validation split of the default size)."""
    from analysis import data

    return data.load_cifar10()


def last_epoch(metrics: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The final epoch of every run (per `by` and seed), with the train - validation
    accuracy gap (training accuracy scored like validation: eval mode, no augmentation)."""
    last = metrics.sort_values("epoch").groupby(by + ["seed"]).tail(1).copy()
    last["gap"] = last["clean_train_acc"] - last["val_acc"]
    return last


def overfitting_gap(metrics: pd.DataFrame, by: list[str] | None = None) -> Difference:
    """Training minus validation accuracy at the last epoch, over seeds (a run's two
    scores are a pair)."""
    last = last_epoch(metrics, by or [])
    return results.difference(
        pd.concat([last.assign(split="train", acc=last["clean_train_acc"]),
                   last.assign(split="val", acc=last["val_acc"])]),
        "split", "train", "val", "acc")


def standing(d: Difference, margin: float = MARGIN) -> str:
    """One word for a difference: higher, lower, equivalent (the interval inside
    +-margin), inconclusive (within noise, not equivalent) or not judged."""
    return phrase(d, higher="higher", lower="lower",
                  within="equivalent" if d.equivalent(margin) else "inconclusive",
                  unjudged="not judged")


# ---------------------------------------------------------------- Lab 1

@dataclass(frozen=True)
class Lab1A(Finding):
    """Sanity checks of the untrained LeNet-5 over seeds."""

    losses: tuple[float, ...]  # validation loss at initialisation, per seed
    accuracies: tuple[float, ...]
    params: int
    layer_params: tuple[int, ...]  # conv1, conv2, fc3, fc4, fc5: weights plus biases

    @property
    def loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    @property
    def accuracy(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def sane(self) -> bool:
        return (abs(self.loss - LN10) <= NEAR_LN10 and abs(self.accuracy - CHANCE) <= NEAR_CHANCE
                and self.params == LENET_PARAMS)

    @property
    def key(self) -> str:
        return (f"initial loss {num(self.loss, 4)} against ln 10 = {num(LN10, 4)}, accuracy "
                f"{pct(self.accuracy)}, {self.params:,} parameters")

    @property
    def headline(self) -> str:
        return f"initial loss {num(self.loss, 4)} (ln 10 = {num(LN10, 4)})"

    @property
    def short(self) -> str:
        return ("All three checks pass: loss near ln 10, accuracy near chance, 62,006 "
                "parameters" if self.sane else "A sanity check fails: look at the numbers")


def lab1_a_from(init: pd.DataFrame) -> Lab1A:
    """`init`: lenet-init's runs (untrained networks)."""
    import torch

    from analysis import models

    lenet = models.build_model("lenet5")
    layers = [models.count_params(m) for m in lenet.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return Lab1A(tuple(init["init_val_loss"]), tuple(init["init_val_acc"]),
                 models.count_params(lenet), tuple(layers))


def lab1_a(results_dir=None) -> Lab1A:
    return lab1_a_from(results.runs(experiment="lenet-init", results=results_dir))


@dataclass(frozen=True)
class Lab1B(Finding):
    """Per-channel statistics of the training split, before and after normalising."""

    mean: tuple[float, ...]  # red, green, blue, pixels in [0, 1]
    std: tuple[float, ...]
    mean_after: tuple[float, ...]
    std_after: tuple[float, ...]

    @property
    def key(self) -> str:
        return (f"training-split mean {' / '.join(num(v, 3) for v in self.mean)}, std "
                f"{' / '.join(num(v, 3) for v in self.std)} (red / green / blue); after: "
                f"mean within {num(max(abs(v) for v in self.mean_after), 1)} of 0, std within "
                f"{num(max(abs(v - 1) for v in self.std_after), 1)} of 1")

    @property
    def headline(self) -> str:
        return f"mean {' / '.join(num(v, 3) for v in self.mean)}"


def lab1_b(results_dir=None) -> Lab1B:
    from analysis import data

    c = cifar()
    x = data.normalize(c.train_x, c.mean, c.std)
    return Lab1B(tuple(c.mean.tolist()), tuple(c.std.tolist()),
                 tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist()))


@dataclass(frozen=True)
class Lab1C(Finding):
    """Images per class and split."""

    counts: pd.DataFrame = field(compare=False)  # rows: classes; columns: train, validation, test

    @property
    def balanced(self) -> bool:
        """Every split holds its classes equally often (to within one image)."""
        return all(self.counts[c].max() - self.counts[c].min() <= 1 for c in self.counts)

    @property
    def key(self) -> str:
        return (f"{len(self.counts)} classes, "
                f"{' / '.join(f'{int(n):,}' for n in self.counts.sum())} train / validation / "
                f"test images, {'balanced' if self.balanced else 'not balanced'}")

    @property
    def headline(self) -> str:
        return f"{' / '.join(f'{int(n):,}' for n in self.counts.sum())} images"

    @property
    def short(self) -> str:
        return (f"{len(self.counts)} {'balanced' if self.balanced else 'unbalanced'} classes "
                "of small 32×32 colour images")


def lab1_c(results_dir=None) -> Lab1C:
    c = cifar()
    counts = pd.DataFrame({split: pd.Series(y.numpy()).value_counts().sort_index()
                           for split, y in [("train", c.train_y), ("validation", c.val_y),
                                            ("test", c.test_y)]})
    counts.index = list(c.classes)
    return Lab1C(counts)


@dataclass(frozen=True)
class Lab1D(Finding):
    """Where the baseline runs executed."""

    devices: tuple[str, ...]
    memory_total: float | None  # bytes of accelerator memory (None on the CPU)
    memory_peak: float | None  # the largest peak allocation of a run

    @property
    def on_gpu(self) -> bool:
        return any(d.startswith("cuda") for d in self.devices)

    @property
    def key(self) -> str:
        return f"runs on {names(self.devices)}"

    @property
    def short(self) -> str:
        return ("Check the device of the parameters and of every batch; these runs ran on the "
                "GPU" if self.on_gpu else "Check the device of the parameters and of every "
                "batch; this build had no GPU")


def lab1_d_from(base: pd.DataFrame) -> Lab1D:
    """`base`: lenet-baseline's runs."""
    total = base.get("device_memory_total", pd.Series(dtype=float)).dropna()
    peak = base.get("device_memory_peak_allocated", pd.Series(dtype=float)).dropna()
    return Lab1D(tuple(sorted(set(base["device"].dropna()))),
                 float(total.max()) if len(total) else None,
                 float(peak.max()) if len(peak) else None)


def lab1_d(results_dir=None) -> Lab1D:
    return lab1_d_from(results.runs(experiment="lenet-baseline", results=results_dir))


@dataclass(frozen=True)
class Lab1G(Finding):
    """LeNet-5 trained with the reference setting: curves and the overfitting gap."""

    initial_loss: float
    curves: pd.DataFrame = field(compare=False)  # per epoch, mean over seeds
    gap: Difference  # training minus validation accuracy at the last epoch
    turn: int  # epoch of the lowest 3-epoch running mean of the validation loss
    loss_rise: float  # how far that running mean ends above its lowest
    train_drop: float  # how far the training loss falls after that epoch
    test_best: float  # test accuracy of the best-validation checkpoint (mean over seeds)
    test_final: float

    @property
    def epochs(self) -> int:
        return len(self.curves)

    @property
    def overfits(self) -> bool:
        return self.gap.verdict is Verdict.HIGHER and self.gap.low > OVERFIT_MARGIN

    @property
    def loss_turns(self) -> bool:
        return self.turn < self.epochs and self.loss_rise > LOSS_TURN

    @property
    def diagnosis(self) -> str:
        """overfits (gap and a turning validation loss), starts to overfit (gap only), or
        underfits (no gap beyond the margin)."""
        if not self.overfits:
            return "underfits"
        return "overfits" if self.loss_turns else "starts to overfit"

    @property
    def key(self) -> str:
        return (f"initial loss {num(self.initial_loss, 4)}; training minus validation accuracy "
                f"at the last epoch {judged(self.gap)}")

    @property
    def headline(self) -> str:
        return f"gap {pts(self.gap.diff)}"

    @property
    def short(self) -> str:
        start = "≈ ln 10" if abs(self.initial_loss - LN10) <= NEAR_LN10 else "far from ln 10"
        state = {"overfits": "the network overfits",
                 "starts to overfit": "the network starts to overfit",
                 "underfits": "no clear overfitting in this schedule"}[self.diagnosis]
        return f"Initial loss {start}; {state}"


def lab1_g_from(base: pd.DataFrame, metrics: pd.DataFrame) -> Lab1G:
    curves = metrics.groupby("epoch")[["clean_train_loss", "clean_train_acc", "val_loss",
                                       "val_acc"]].mean()
    smooth = curves["val_loss"].rolling(3, center=True, min_periods=1).mean()
    turn = int(smooth.idxmin())
    last = curves.iloc[-1]
    return Lab1G(float(base["init_val_loss"].mean()), curves, overfitting_gap(metrics), turn,
                 float(smooth.iloc[-1] - smooth.min()),
                 float(curves.loc[turn, "clean_train_loss"] - last["clean_train_loss"]),
                 float(base["test_best_acc"].mean()), float(base["test_final_acc"].mean()))


def lab1_g(results_dir=None) -> Lab1G:
    return lab1_g_from(results.runs(experiment="lenet-baseline", results=results_dir),
                       results.table("metrics", experiment="lenet-baseline",
                                     results=results_dir))


@dataclass(frozen=True)
class Lab1H(Finding):
    """Kaiming and Xavier normal (hidden layers) against PyTorch's default."""

    final: dict[str, Difference] = field(compare=False)  # scheme -> final accuracy - default's
    early: dict[str, Difference] = field(compare=False)  # the same after the first epoch
    initial_loss: dict[str, float] = field(compare=False)  # scheme -> mean initial loss
    accuracy: dict[str, float] = field(compare=False)  # scheme -> mean final accuracy

    @property
    def key(self) -> str:
        return "final validation accuracy against the default: " + "; ".join(
            f"{VALUE_NAMES['init'][s]} {judged(d, margin=MARGIN)}" for s, d in self.final.items())

    @property
    def headline(self) -> str:
        return "; ".join(f"{VALUE_NAMES['init'][s]} {pts(d.diff)}" for s, d in self.final.items())

    @property
    def short(self) -> str:
        return "Against the default: " + "; ".join(
            f"{VALUE_NAMES['init'][s]} {standing(d)}" for s, d in self.final.items())


def lab1_h_from(runs: pd.DataFrame, metrics: pd.DataFrame) -> Lab1H:
    schemes = [s for s in runs["init"].drop_duplicates() if s != "default"]
    first = metrics[metrics["epoch"] == 1]
    return Lab1H({s: results.difference(runs, "init", s, "default", ACC) for s in schemes},
                 {s: results.difference(first, "init", s, "default", "val_acc")
                  for s in schemes},
                 runs.groupby("init")["init_val_loss"].mean().to_dict(),
                 runs.groupby("init")[ACC].mean().to_dict())


def lab1_h(results_dir=None) -> Lab1H:
    return lab1_h_from(results.runs(experiment="lenet-init-schemes", results=results_dir),
                       results.table("metrics", experiment="lenet-init-schemes",
                                     results=results_dir))


# ---------------------------------------------------------------- Lab 2

def cell_name(padding, flip) -> str:
    """An augmentation setting of Lab 2's grid: 'padding 4, flip 0.5'."""
    return f"padding {int(padding)}, flip {num(flip)}"


@dataclass(frozen=True)
class Lab2A(Finding):
    """Lab 2's crop x flip grid, judged by final validation accuracy."""

    cells: pd.DataFrame = field(compare=False)  # per cell: final acc, train acc, val acc, gap
    top: str  # the cell of highest mean
    tied: tuple[str, ...]  # the other cells within noise of it
    gain: Difference  # top minus no augmentation
    gaps: dict[str, Difference] = field(compare=False)  # each cell's gap minus the plain one's
    flip: Difference  # flipping, averaged over the paddings seed by seed
    protocol: str  # the setting the rest of the lab uses
    behind: Difference  # the protocol minus the top cell (unjudged when they are one)

    @property
    def key(self) -> str:
        plain = self.cells.loc[cell_name(0, 0.0), "final"]
        return (f"highest {pct(self.cells['final'].max())} at {self.top}, no augmentation "
                f"{pct(plain)}; the protocol ({self.protocol}) minus the highest "
                f"{judged(self.behind)}")

    @property
    def headline(self) -> str:
        return f"{self.top}: {pct(self.cells['final'].max())}"

    @property
    def short(self) -> str:
        others = f" ({count(len(self.tied), 'other')} within noise)" if self.tied else ""
        if self.protocol == self.top:
            return f"{self.top.capitalize()}{others}, the protocol's setting"
        where = phrase(self.behind, higher="above it", lower="below it beyond noise",
                       within="within noise of it", unjudged="not judged against it")
        return f"{self.top.capitalize()}{others}; the protocol is {where}"


def lab2_a_from(runs: pd.DataFrame, metrics: pd.DataFrame, protocol: str) -> Lab2A:
    runs = runs.assign(cell=[cell_name(p, f) for p, f in
                             zip(runs["crop_padding"], runs["flip_p"], strict=True)])
    last = last_epoch(metrics, ["crop_padding", "flip_p"])
    last = last.assign(cell=[cell_name(p, f) for p, f in
                             zip(last["crop_padding"], last["flip_p"], strict=True)])
    cells = (runs.groupby("cell")[[ACC]].mean().rename(columns={ACC: "final"})
             .join(last.groupby("cell")[["clean_train_acc", "val_acc", "gap"]].mean()))
    top = cells["final"].idxmax()
    vs_top = {c: results.difference(runs, "cell", top, c, ACC) for c in cells.index if c != top}
    tied = tuple(c for c, d in vs_top.items() if d.verdict is not Verdict.HIGHER)
    plain = cell_name(0, 0.0)
    flips = runs.groupby(["flip_p", "seed"], as_index=False)[ACC].mean()
    return Lab2A(
        cells, top, tied, results.difference(runs, "cell", top, plain, ACC),
        {c: results.difference(last, "cell", c, plain, "gap") for c in cells.index
         if c != plain},
        results.difference(flips, "flip_p", flips["flip_p"].max(), 0.0, ACC), protocol,
        results.difference(runs, "cell", protocol, top, ACC) if protocol != top
        else Difference(0.0, math.nan, math.nan, 0, True, Verdict.UNJUDGED))


def protocol_cell(results_dir=None) -> str:
    """Lab 2's protocol setting, as the runs of lenet-bn recorded it."""
    run = results.runs(experiment="lenet-bn", results=results_dir).iloc[0]
    return cell_name(run["crop_padding"], run["flip_p"])


def lab2_a(results_dir=None) -> Lab2A:
    return lab2_a_from(results.runs(experiment="lenet-augment", results=results_dir),
                       results.table("metrics", experiment="lenet-augment",
                                     results=results_dir),
                       protocol_cell(results_dir))


@dataclass(frozen=True)
class Lab2BBn(Finding):
    """Batch norm against none, at the protocol's learning rate."""

    gain: Difference  # final validation accuracy, BN minus none
    early: Difference  # validation accuracy after one epoch, BN minus none
    accuracy: dict[bool, float] = field(compare=False)  # batch_norm -> mean final accuracy
    first_epoch: dict[bool, float] = field(compare=False)

    @property
    def key(self) -> str:
        return (f"BN minus no BN: final validation accuracy {judged(self.gain)}, after one "
                f"epoch {judged(self.early)}")

    @property
    def headline(self) -> str:
        return f"BN {pts(self.gain.diff)}"

    @property
    def short(self) -> str:
        start = phrase(self.early, higher="A faster start", lower="A slower start",
                       within="No faster start beyond noise", unjudged="The start not judged")
        end = phrase(self.gain, higher="higher final accuracy", lower="lower final accuracy",
                     within="final accuracy within noise", unjudged="final accuracy not judged")
        return f"{start}, {end}"


def lab2_b_bn_from(runs: pd.DataFrame, metrics: pd.DataFrame) -> Lab2BBn:
    plain = runs[runs["bn_noise"].fillna(0) == 0]
    first = metrics[(metrics["epoch"] == 1) & (metrics["bn_noise"].fillna(0) == 0)]
    return Lab2BBn(results.difference(plain, "batch_norm", True, False, ACC),
                   results.difference(first, "batch_norm", True, False, "val_acc"),
                   plain.groupby("batch_norm")[ACC].mean().to_dict(),
                   first.groupby("batch_norm")["val_acc"].mean().to_dict())


def lab2_b_bn(results_dir=None) -> Lab2BBn:
    return lab2_b_bn_from(results.runs(experiment="lenet-bn", results=results_dir),
                          results.table("metrics", experiment="lenet-bn", results=results_dir))


@dataclass(frozen=True)
class Lab2BLr(Finding):
    """With and without batch norm across learning rates: where each stops learning."""

    table: pd.DataFrame = field(compare=False)  # per (batch_norm, lr): runs, failed, final acc
    works: dict[bool, float]  # the largest rate at which every seed learns (NaN: none)
    breaks: dict[bool, float]  # the smallest rate at which a seed fails (NaN: none)
    at_shared: Difference | None  # BN minus none at the largest rate where both learn
    shared: float | None

    @property
    def wider(self) -> bool:
        """Batch norm learns at a larger rate than no BN does (any rate beats none)."""
        def top(bn):
            return -math.inf if math.isnan(self.works[bn]) else self.works[bn]
        return top(True) > top(False)

    def limit(self, bn: bool) -> str:
        return "none" if math.isnan(self.works[bn]) else num(self.works[bn])

    @property
    def key(self) -> str:
        return (f"largest rate that learns at every seed: {self.limit(False)} without BN, "
                f"{self.limit(True)} with BN")

    @property
    def headline(self) -> str:
        return f"lr {self.limit(False)} → {self.limit(True)}"

    @property
    def short(self) -> str:
        return ("Yes: batch norm learns at larger rates" if self.wider else
                "Not on this grid: batch norm learns at no larger rate")


def lab2_b_lr_from(runs: pd.DataFrame) -> Lab2BLr:
    runs = runs.assign(failed=results.failed(runs))
    table = runs.groupby(["batch_norm", "lr"]).agg(runs=("seed", "size"),
                                                   failed=("failed", "sum"),
                                                   final=(ACC, "mean"))
    works, breaks = {}, {}
    for bn in (False, True):
        t = table.loc[bn] if bn in table.index.get_level_values(0) else table.iloc[:0]
        good, bad = t.index[t["failed"] == 0], t.index[t["failed"] > 0]
        works[bn] = float(good.max()) if len(good) else math.nan
        breaks[bn] = float(bad.min()) if len(bad) else math.nan
    both = sorted(set(table.index[table["failed"] == 0].get_level_values("lr")))
    both = [lr for lr in both if all((bn, lr) in table.index and table.loc[(bn, lr), "failed"] == 0
                                     for bn in (False, True))]
    shared = max(both) if both else None
    at = (None if shared is None else
          results.difference(runs[runs["lr"] == shared], "batch_norm", True, False, ACC))
    return Lab2BLr(table, works, breaks, at, shared)


def lab2_b_lr(results_dir=None) -> Lab2BLr:
    return lab2_b_lr_from(results.runs(experiment="lenet-bn-lr", results=results_dir))


@dataclass(frozen=True)
class Lab2BSwish(Finding):
    """Swish against ReLU, both with batch norm."""

    diff: Difference  # final validation accuracy, Swish minus ReLU
    ci: pd.DataFrame = field(compare=False)  # per activation: mean, ci_low, ci_high, n

    @property
    def key(self) -> str:
        return f"Swish minus ReLU: final validation accuracy {judged(self.diff, margin=MARGIN)}"

    @property
    def headline(self) -> str:
        return f"Swish {pts(self.diff.diff)}"

    @property
    def short(self) -> str:
        d = self.diff
        return phrase(d, higher="Yes, measurably", lower="No: measurably worse",
                      within=f"No: equivalent within {pts(MARGIN)}" if d.equivalent(MARGIN)
                      else "Not measurably (inconclusive)", unjudged="Not judged")


def lab2_b_swish_from(runs: pd.DataFrame) -> Lab2BSwish:
    return Lab2BSwish(results.difference(runs, "activation", "swish", "relu", ACC),
                      results.mean_ci(runs, "activation", ACC, bounded=True)
                      .set_index("activation"))


def lab2_b_swish(results_dir=None) -> Lab2BSwish:
    return lab2_b_swish_from(results.runs(experiment="lenet-swish", results=results_dir))


@dataclass(frozen=True)
class Lab2CLr(Finding):
    """The learning-rate sweep."""

    accuracy: pd.Series = field(compare=False)  # lr -> mean final accuracy (NaN: all failed)
    best: float  # the rate of highest mean
    tied: tuple[float, ...]  # other rates within noise of it, none of whose runs failed
    diverged: pd.DataFrame = field(compare=False)  # runs whose loss became non-finite
    collapsed: pd.DataFrame = field(compare=False)  # finite loss, never above chance
    collapse: dict = field(compare=False)  # how the collapsed runs' losses went (see below)
    early: pd.DataFrame = field(compare=False)  # steps of the first two epochs, top and base lr

    @property
    def failing(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.diverged["lr"]) | set(self.collapsed["lr"])))

    @property
    def slowest(self) -> float:
        return float(self.accuracy.index.min())

    @property
    def key(self) -> str:
        return (f"{pct(self.accuracy[self.best])} at lr {num(self.best)}, "
                f"{pct(self.accuracy[self.slowest])} at {num(self.slowest)}")

    @property
    def headline(self) -> str:
        return f"best lr {num(self.best)}"

    @property
    def short(self) -> str:
        tied = f" ({names(self.tied, num)} within noise)" if self.tied else ""
        fails = (f"; lr {names(self.failing, num)} fail{'s' * (len(self.failing) == 1)}"
                 if self.failing else "")
        return f"Best at lr {num(self.best)}{tied}{fails}"


def collapse_story(runs: pd.DataFrame, metrics: pd.DataFrame) -> dict:
    """How collapsed runs failed without a non-finite loss: the largest first-epoch training
    loss, how far later epochs stay from ln 10 (the loss of a uniform guess), and whether
    validation accuracy sat at exactly one class's share at every epoch."""
    m = metrics[metrics["key"].isin(runs["key"])]
    later = m[m["epoch"] > 1]
    return {"first_epoch_loss": float(m.loc[m["epoch"] == 1, "train_loss"].max())
            if len(m) else math.nan,
            "later_from_ln10": float((later["train_loss"] - LN10).abs().max())
            if len(later) else math.nan,
            "constant": bool(len(m)) and bool((m["val_acc"] == CHANCE).all())}


def first_steps(steps: pd.DataFrame, rates) -> pd.DataFrame:
    """The training steps of the first two epochs at `rates`, numbered through (t)."""
    early = steps[steps["lr"].isin(rates) & (steps["epoch"] <= 2)].copy()
    per_epoch = early.groupby(["key", "epoch"])["step"].transform("max")
    early["t"] = (early["epoch"] - 1) * per_epoch + early["step"]
    return early


def lab2_c_lr_from(runs: pd.DataFrame, metrics: pd.DataFrame, steps: pd.DataFrame,
                   protocol_lr: float) -> Lab2CLr:
    accuracy = runs.groupby("lr")[ACC].mean()
    best = float(accuracy.idxmax())
    failed = results.failed(runs)
    vs = {lr: results.difference(runs, "lr", best, lr, ACC) for lr in accuracy.index
          if lr != best}
    bad = set(runs.loc[failed, "lr"])
    tied = tuple(sorted(lr for lr, d in vs.items()
                        if d.verdict is not Verdict.HIGHER and lr not in bad))
    # Near chance below the best rate is slowness, not failure; above it, a collapse.
    collapsed = runs[(runs["status"] == "finished") & failed & (runs["lr"] > best)]
    return Lab2CLr(accuracy, best, tied, runs[runs["status"] == "diverged"], collapsed,
                   collapse_story(collapsed, metrics),
                   first_steps(steps, [runs["lr"].max(), protocol_lr]))


def lab2_c_lr(results_dir=None) -> Lab2CLr:
    protocol = results.runs(experiment="lenet-bn", results=results_dir)["lr"].iloc[0]
    return lab2_c_lr_from(results.runs(experiment="lenet-lr", results=results_dir),
                          results.table("metrics", experiment="lenet-lr", results=results_dir),
                          results.table("steps", experiment="lenet-lr", results=results_dir),
                          float(protocol))


@dataclass(frozen=True)
class Lab2CL2(Finding):
    """Weight decay strengths, without augmentation, where LeNet-5 overfits."""

    table: pd.DataFrame = field(compare=False)  # per strength: final, train_acc, val_acc, gap
    accuracy: dict[float, Difference] = field(compare=False)  # vs no penalty
    gap: dict[float, Difference] = field(compare=False)
    fit: dict[float, Difference] = field(compare=False)  # training accuracy vs no penalty
    images: int  # training images of the regime
    epochs: int

    @property
    def strongest(self) -> float:
        return max(self.accuracy)

    @property
    def overfits(self) -> bool:
        """Without a penalty the training accuracy ends above validation accuracy by more
        than the margin (the regime has something for the penalty to remove)."""
        return self.table.loc[0.0, "gap"] > OVERFIT_MARGIN

    @property
    def key(self) -> str:
        s = self.strongest
        return (f"train minus validation gap {pts(self.table.loc[s, 'gap'])} at {num(s)}, "
                f"{pts(self.table.loc[0.0, 'gap'])} without, a change of "
                f"{judged(self.gap[s])}; final validation accuracy {judged(self.accuracy[s])}")

    @property
    def headline(self) -> str:
        return f"gap {pts(self.gap[self.strongest].diff)} at {num(self.strongest)}"

    @property
    def short(self) -> str:
        s = self.strongest
        gap = phrase(self.gap[s], higher="a wider gap", lower="a narrower gap",
                     within="no change in the gap beyond noise", unjudged="the gap not judged")
        acc = phrase(self.accuracy[s], higher="higher accuracy", lower="lower accuracy",
                     within="accuracy within noise", unjudged="accuracy not judged")
        return f"At {num(s)}: {gap}, {acc}"


def lab2_c_l2_from(runs: pd.DataFrame, metrics: pd.DataFrame) -> Lab2CL2:
    last = last_epoch(metrics, ["weight_decay"])
    table = (runs.groupby("weight_decay")[[ACC]].mean().rename(columns={ACC: "final"})
             .join(last.groupby("weight_decay")[["clean_train_acc", "val_acc", "gap"]].mean()))
    others = [w for w in table.index if w != 0.0]
    return Lab2CL2(table, {w: results.difference(runs, "weight_decay", w, 0.0, ACC)
                           for w in others},
                   {w: results.difference(last, "weight_decay", w, 0.0, "gap") for w in others},
                   {w: results.difference(last, "weight_decay", w, 0.0, "clean_train_acc")
                    for w in others},
                   int(runs["sizes_train"].iloc[0]), int(runs["epochs"].iloc[0]))


def lab2_c_l2(results_dir=None) -> Lab2CL2:
    return lab2_c_l2_from(results.runs(experiment="lenet-l2", results=results_dir),
                          results.table("metrics", experiment="lenet-l2", results=results_dir))


def lab2_c_l1(results_dir=None):
    """L1 against L2 (shared with tf-07: one measurement of sparsity)."""
    from analysis.findings import claims

    return claims.sparsity_finding(results_dir)


def typical_comparison(results_dir=None) -> pd.DataFrame:
    """Lab 2's steps against a typical course submission's single runs, like with like: the
    setting, this book's runs' mean best and final validation accuracy and test accuracy of
    the best checkpoint, their seeds and epochs, and the typical submission's best
    accuracy (picked on the test set). The baseline is Lab 2's own cell without
    augmentation, trained as long as the others."""
    from analysis import course

    typical = course.typical_accuracy()
    aug = results.runs(experiment="lenet-augment", results=results_dir)
    bn = results.runs(experiment="lenet-bn", results=results_dir)
    sw = results.runs(experiment="lenet-swish", results=results_dir)
    protocol = bn.iloc[0]
    plain = aug[(aug["crop_padding"] == 0) & (aug["flip_p"] == 0)]
    cropflip = aug[(aug["crop_padding"] == protocol["crop_padding"])
                   & (aug["flip_p"] == protocol["flip_p"])]
    with_bn = bn[bn["batch_norm"].astype(bool) & (bn["bn_noise"].fillna(0) == 0)]
    steps = [("no augmentation", plain, "baseline"), ("crop and flip", cropflip, "crop_flip"),
             ("with batch norm", with_bn, "batch_norm"),
             ("with Swish", sw[sw["activation"] == "swish"], "swish")]
    return pd.DataFrame([{"setting": name, "best val acc": runs["best_val_acc"].mean(),
                          "final val acc": runs[ACC].mean(),
                          "test acc": runs["test_best_acc"].mean(),
                          "seeds": runs["seed"].nunique(), "epochs": int(runs["epochs"].max()),
                          "typical submission": typical[key]}
                         for name, runs, key in steps])


# ---------------------------------------------------------------- Lab 3

# The bar this project set itself for the full profile (its Lab 3 issue): beat He et al.'s
# ResNet-20 and the typical submission, as the mean test accuracy over three seeds.
TARGET = 0.915
FIT = 0.97  # training accuracy at or above this: the training set is fit


@dataclass(frozen=True)
class Lab3(Finding):
    """ResNet-20's recipe and what it reached."""

    recipe: pd.Series = field(compare=False)  # one run's parameters and sizes
    test: pd.Series = field(compare=False)  # test accuracy of the best checkpoint: mean, CI, n
    test_final: float  # of the last epoch, mean over seeds
    minutes: float  # wall minutes per run
    devices: tuple[str, ...]
    full_epochs: int  # the recipe's epochs on the full profile
    train_acc: float  # eval-mode training accuracy at the last epoch, mean over seeds
    val_acc: float
    lenet: float  # the Lab 1 baseline LeNet-5's test accuracy (best checkpoint, mean)
    published: float  # He et al.'s ResNet-20 test accuracy
    published_epochs: int
    typical: float  # a typical submission's
    typical_epochs: int

    @property
    def seeds(self) -> int:
        return int(self.test["n"])

    @property
    def epochs(self) -> int:
        return int(self.recipe["epochs"])

    @property
    def shortened(self) -> bool:
        """Fewer epochs or images than the full recipe: not comparable with the figures."""
        return self.epochs < self.full_epochs or not pd.isna(self.recipe["subset"])

    @property
    def fits(self) -> bool:
        return self.train_acc >= FIT

    @property
    def key(self) -> str:
        spread = (f" (95% CI {pct(self.test['ci_low'], 2)} to {pct(self.test['ci_high'], 2)}, "
                  f"{count(self.seeds, 'seed')})" if self.seeds > 1 else " (one seed)")
        return (f"test accuracy {pct(self.test['mean'], 2)}{spread} after "
                f"{count(self.epochs, 'epoch')} of the recipe's {self.full_epochs}")

    @property
    def headline(self) -> str:
        return f"{pct(self.test['mean'], 2)} after {count(self.epochs, 'epoch')}"

    def comparison(self) -> pd.DataFrame:
        """This book's test accuracy beside the published, typical and target figures."""
        ours = (f"this book ({count(self.epochs, 'epoch')}, "
                f"{'one seed' if self.seeds == 1 else f'mean of {self.seeds} seeds'})")
        return pd.DataFrame({"source": [ours, f"He et al. 2016 ({self.published_epochs} epochs)",
                                        "typical course submission "
                                        f"({self.typical_epochs} epochs)",
                                        "this project's target (full profile)"],
                             "test accuracy (%)": [round(100 * v, 2) for v in (
                                 self.test["mean"], self.published, self.typical, TARGET)]})


def lab3(results_dir=None) -> Lab3:
    from analysis import course, plan

    res = results.runs(experiment="resnet20", results=results_dir)
    done = res[res["status"].isin(results.DONE)]
    test = results.mean_ci(done.assign(model="resnet20"), "model", "test_best_acc",
                           bounded=True).iloc[0]
    metrics = results.table("metrics", experiment="resnet20", results=results_dir)
    last = metrics[metrics["epoch"] == metrics.groupby("key")["epoch"].transform("max")]
    lenet = results.runs(experiment="lenet-baseline", results=results_dir)
    full = plan.load()["protocols"]["lab3"]["params"]["epochs"]
    return Lab3(res.iloc[0], test, float(done["test_final_acc"].mean()),
                float(done["seconds"].mean() / 60), tuple(sorted(set(done["device"]))),
                int(full), float(last["clean_train_acc"].mean()), float(last["val_acc"].mean()),
                float(lenet["test_best_acc"].mean()), 1 - course.published()["resnet20_error"],
                course.published()["resnet20_epochs"], course.typical_accuracy()["resnet"],
                course.typical_resnet_epochs())


def per_class(results_dir=None) -> pd.DataFrame:
    """Test accuracy per class of the first ResNet-20 run and the first Lab 1 baseline
    LeNet-5 run (final weights), and their difference."""
    c = cifar()
    nets = {"ResNet-20": results.runs(experiment="resnet20", results=results_dir),
            "LeNet-5 (Lab 1)": results.runs(experiment="lenet-baseline", results=results_dir)}
    table = pd.DataFrame({name: results.per_class_accuracy(
        results.predictions(runs.sort_values("seed").iloc[0], c, "test", results_dir),
        c.classes) for name, runs in nets.items()})
    return table.assign(difference=table["ResNet-20"] - table["LeNet-5 (Lab 1)"])


FINDINGS = {"lab1-a": lab1_a, "lab1-b": lab1_b, "lab1-c": lab1_c, "lab1-d": lab1_d,
            "lab1-g": lab1_g, "lab1-h": lab1_h, "lab2-a": lab2_a, "lab2-b-bn": lab2_b_bn,
            "lab2-b-lr": lab2_b_lr, "lab2-b-swish": lab2_b_swish, "lab2-c-lr": lab2_c_lr,
            "lab2-c-l2": lab2_c_l2, "lab2-c-l1": lab2_c_l1, "lab3": lab3}
