"""The few figure kinds the book repeats, drawn with seaborn from tidy results.

Each function takes a DataFrame (from analysis.results) and returns the figure,
so chapters stay one call per figure and tests can check what was drawn.
"""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")

METRIC_LABELS = {"loss": "cross-entropy loss", "acc": "accuracy"}


def curves(long: pd.DataFrame, hue: str | None = None, height: float = 3.2):
    """Loss and accuracy per epoch, train (dashed) vs validation (solid); one line per `hue`.

    `long` has columns epoch, split (train/val), metric (loss/acc), value, and any
    parameter columns; several seeds of one configuration draw a mean with a 95% CI band.
    """
    g = sns.relplot(data=long, x="epoch", y="value", col="metric", hue=hue, style="split",
                    style_order=["val", "train"], kind="line", errorbar=("ci", 95),
                    facet_kws={"sharey": False}, height=height, aspect=1.3,
                    palette="colorblind" if hue else None)
    for ax, metric in zip(g.axes.flat, g.col_names, strict=True):
        ax.set_title("")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    return g.figure


def sweep(summary: pd.DataFrame, x: str, y: str, hue: str | None = None, logx: bool = False,
          diverged: str = "status", ylabel: str | None = None, ax=None):
    """A metric against a swept parameter (mean and 95% CI over seeds), failed runs marked.

    Runs whose `diverged` column says "diverged" have no metric: red crosses on the x
    axis. Any other value but "finished" (a chapter's "collapsed", say) marks a run
    that has a metric but failed: drawn at its value, circled in red, labelled by that
    value. Nothing is dropped.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    status = summary[diverged] if diverged in summary else pd.Series("finished", summary.index)
    ok = summary[status != "diverged"]
    sns.lineplot(data=ok, x=x, y=y, hue=hue, marker="o", errorbar=("ci", 95), ax=ax,
                 palette="colorblind" if hue else None)
    flagged = False
    for label in sorted(set(status) - {"finished", "diverged"}):
        runs = summary[status == label]
        ax.scatter(runs[x], runs[y], marker="o", s=140, facecolors="none",
                   edgecolors="crimson", linewidths=1.8, zorder=5, label=label)
        flagged = True
    bad = summary[status == "diverged"]
    if not bad.empty:
        ymin = ax.get_ylim()[0]
        ax.scatter(bad[x], np.full(len(bad), ymin), marker="x", color="crimson", s=80,
                   zorder=5, label="diverged", clip_on=False)
        flagged = True
    if flagged or hue:
        ax.legend()
    if logx:
        ax.set_xscale("log")
    ax.set_ylabel(ylabel or y)
    return ax.figure


# Readable names for the columns the book's tables show.
COLUMN_NAMES = {
    "best_val_acc": "best val acc", "best_epoch": "best epoch", "val_acc": "val acc",
    "clean_train_acc": "train acc", "train_acc": "train acc", "gap": "gap (points)",
    "test_best_acc": "test acc (best ckpt)",
    "test_final_acc": "test acc (last epoch)", "crop_padding": "crop padding",
    "flip_p": "flip prob.", "weight_decay": "weight decay", "batch_norm": "batch norm",
    "init_val_loss": "initial loss", "init_val_acc": "initial acc", "ci_low": "95% CI low",
    "ci_high": "95% CI high", "min_val_loss_epoch": "min val loss epoch",
    "diverged_at_epoch": "diverged at epoch", "diverged_at_step": "diverged at step",
}
ACCURACY_COLUMNS = ("acc", "gap", "mean", "ci_low", "ci_high")


def percent(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table for reading: accuracy-like columns (names ending in acc, gap, mean or ci_*)
    as percentages, every known column under its readable name."""
    out = table.copy()
    for col in out.columns:
        if str(col).endswith(ACCURACY_COLUMNS) and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = (100 * out[col]).round(digits)
    return out.rename(columns=COLUMN_NAMES)


def pct(x: float, digits: int = 1) -> str:
    """0.6423 -> '64.2%' (for inline numbers in prose)."""
    return f"{100 * float(x):.{digits}f}%"


def pts(x: float, digits: int = 1) -> str:
    """0.036 -> '3.6 points': a difference of two accuracies, in percentage points."""
    value = 100 * float(x)
    unit = "point" if round(abs(value), digits) == 1 else "points"
    return f"{value:.{digits}f} {unit}"


def count(n: int, noun: str) -> str:
    """count(1, "seed") -> '1 seed', count(3, "seed") -> '3 seeds'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def num(x: float, digits: int = 3) -> str:
    """`digits` significant digits for prose: 0.0123, 45.6, 12,300; 5e-4 and 3.43e15 beyond."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    exponent = int(exponent)  # after rounding: 9.9996 gives 1.00e+01, not 9.99e+00
    if exponent < -3 or exponent >= 6:
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
    if exponent >= digits - 1:  # a whole number at this precision
        return f"{round(x, digits - 1 - exponent):,.0f}"
    return f"{x:.{digits}g}"
