"""The few figure kinds the book repeats, drawn with seaborn from tidy results.

Each function takes a DataFrame (from analysis.results) and returns the figure,
so chapters stay one call per figure and tests can check what was drawn.
"""
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
    """A number with `digits` significant digits, no scientific notation for everyday sizes."""
    x = float(x)
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.{digits - 1}e}"
