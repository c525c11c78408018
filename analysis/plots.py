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
    """A metric against a swept parameter (mean and 95% CI over seeds); diverged runs are
    drawn as red crosses on the x axis, never dropped."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    ok = summary[summary[diverged] != "diverged"] if diverged in summary else summary
    sns.lineplot(data=ok, x=x, y=y, hue=hue, marker="o", errorbar=("ci", 95), ax=ax,
                 palette="colorblind" if hue else None)
    if diverged in summary:
        bad = summary[summary[diverged] == "diverged"]
        if not bad.empty:
            ymin = ax.get_ylim()[0]
            ax.scatter(bad[x], np.full(len(bad), ymin), marker="x", color="crimson", s=80,
                       zorder=5, label="diverged", clip_on=False)
            ax.legend()
    if logx:
        ax.set_xscale("log")
    ax.set_ylabel(ylabel or y)
    return ax.figure


def pct(x: float, digits: int = 1) -> str:
    """0.6423 -> '64.2%' (for inline numbers in prose)."""
    return f"{100 * float(x):.{digits}f}%"


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
