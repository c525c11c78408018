"""The few figure kinds the book repeats, drawn with seaborn from tidy results.

Each function takes a DataFrame (from analysis.results) and returns the figure,
so chapters stay one call per figure and tests can check what was drawn.
"""
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown

from analysis.book import COLUMN_INCHES

sns.set_theme(style="whitegrid", context="notebook")

METRIC_LABELS = {"loss": "cross-entropy loss", "acc": "accuracy"}


def curves(long: pd.DataFrame, hue: str | None = None, height: float = 2.6):
    """Loss and accuracy per epoch, train (dashed) vs validation (solid); one line per `hue`.

    `long` has columns epoch, split (train/val), metric (loss/acc), value, and any
    parameter columns; several seeds of one configuration draw a mean with a 95% CI band.
    The two panels and the legend beside them fill the text column (`fit_to_column`).
    """
    g = sns.relplot(data=long, x="epoch", y="value", col="metric", hue=hue, style="split",
                    style_order=["val", "train"], kind="line", errorbar=("ci", 95),
                    facet_kws={"sharey": False}, height=height, aspect=1.3,
                    palette="colorblind" if hue else None)
    for ax, metric in zip(g.axes.flat, g.col_names, strict=True):
        ax.set_title("")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fit_to_column(g)
    return g.figure


def fit_to_column(grid, width: float = COLUMN_INCHES):
    """Make a seaborn FacetGrid (relplot, displot, catplot) `width` inches wide, its
    legend kept on the right: seaborn widens a figure by its legend, which takes a
    row of panels past the text column. The panels shrink; fonts keep their size."""
    fig = grid.figure
    height = fig.get_size_inches()[1]
    legend = grid.legend
    renderer = fig.canvas.get_renderer()
    legend_inches = 0.0
    if legend is not None and legend in fig.legends:  # outside the panels, on the right
        legend_inches = legend.get_window_extent(renderer).width / fig.dpi + 0.05
    # Notebooks save figures cropped to what is drawn (bbox_inches="tight") plus a pad.
    drawn = width - 2 * float(plt.rcParams["savefig.pad_inches"])
    size = drawn
    for _ in range(3):
        fig.set_size_inches(size, height)
        fig.tight_layout(rect=(0, 0, 1 - legend_inches / size, 1))
        excess = fig.get_tightbbox(renderer).width - drawn
        if excess <= 0.01:
            break
        size -= excess
    return grid


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
    "diff": "difference (points)",
}
ACCURACY_COLUMNS = ("acc", "gap", "mean", "ci_low", "ci_high", "diff")


def percent(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table for reading: accuracy-like columns (names ending in acc, gap, mean or ci_*)
    as percentages, every known column under its readable name."""
    out = table.copy()
    for col in out.columns:
        if str(col).endswith(ACCURACY_COLUMNS) and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = (100 * out[col]).round(digits)
    return out.rename(columns=COLUMN_NAMES)


def table(frame: pd.DataFrame, index: bool | None = None, names: dict | None = None) -> Markdown:
    """A DataFrame as a Markdown pipe table, for a `tbl-` cell: Quarto renders it the same
    in HTML and typst, numbers it with its `tbl-cap`, never cuts long text (pandas' HTML
    stops at 50 characters) and shows no 0, 1, 2... index.

    `index`: None drops an unnamed integer index (0, 1, 2..., or what is left of it
    after filtering) and keeps any other as the first columns (name it:
    `frame.rename_axis("class")`); True or False forces either.
    Columns get their readable names (`COLUMN_NAMES`, then `names`). Numbers are right
    aligned; floats show the decimals they were rounded to (padded within a column up
    to 3 decimals, so 61.0 sits under 62.3), missing values a dash. A table whose lines
    are long takes the full text width and wraps its cells, with column widths in
    proportion to their content: keep it to the columns the text needs."""
    out = frame
    if index is None:
        index = any(name is not None for name in out.index.names) or not (
            pd.api.types.is_integer_dtype(out.index) and out.index.nlevels == 1)
    if index:
        out = out.reset_index()
        out.columns = ["" if str(c) in ("index", "level_0") and c not in frame.columns else c
                       for c in out.columns]
    out = out.rename(columns={**COLUMN_NAMES, **(names or {})})
    header = [_cell_text(str(c)) for c in out.columns]
    columns = [_column_texts(out.iloc[:, k]) for k in range(out.shape[1])]
    numeric = [(pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col))
               or all(NUMBER_TEXT.match(t) for t in texts if t != "–")
               for (_, col), texts in zip(out.items(), columns, strict=True)]
    widths = [max([3, len(h), *map(len, col)]) for h, col in zip(header, columns, strict=True)]

    def row(cells) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if right else "-" * (w + 2)
                          for w, right in zip(widths, numeric, strict=True)) + "|"
    rows = [row([col[i] for col in columns]) for i in range(len(out))]
    return Markdown("\n".join([row(header), rule, *rows]))


def _column_texts(column: pd.Series) -> list[str]:
    """The cells of one column as text (see `table`)."""
    if pd.api.types.is_float_dtype(column):
        plain = [np.format_float_positional(v, trim="-") if np.isfinite(v) else None
                 for v in column.astype(float)]
        decimals = max((len(t.partition(".")[2]) for t in plain if t), default=0)
        if decimals <= 3:
            plain = [f"{v:.{decimals}f}" if t else None
                     for v, t in zip(column.astype(float), plain, strict=True)]
        return ["–" if t is None else t for t in plain]
    return ["–" if _missing(v) else _cell_text(str(v)) for v in column]


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array in a cell
        return False


# A number already formatted as text ("2,359,296", "819.1M", "2.0×", "12%"): right aligned.
NUMBER_TEXT = re.compile(r"^[-+]?[\d,]*\.?\d+(?:e[-+]?\d+)?[%×MkG]?$")

# Characters that would turn a cell's text into markup: `@32x32` into a citation,
# `|` into a column break, `*`, `_`, `$` into emphasis or math.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>$@|~^#])")


def _cell_text(text: str) -> str:
    """Text that stays plain text inside one pipe-table cell."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def pct(x: float, digits: int = 1) -> str:
    """0.6423 -> '64.2%' (for inline numbers in prose)."""
    return f"{100 * float(x):.{digits}f}%"


def pts(x: float, digits: int = 1) -> str:
    """0.036 -> '3.6 points': a difference of two accuracies, in percentage points."""
    value = 100 * float(x)
    unit = "point" if round(abs(value), digits) == 1 else "points"
    return f"{value:.{digits}f} {unit}"


def interval(d: dict) -> str:
    """A `results.difference` for prose: '1.2 points (95% CI 0.3 to 2.1)', or with one seed
    '1.2 points (one seed: not judged)'."""
    if d["verdict"] == "unjudged":
        return f"{pts(d['diff'])} (one seed: not judged)"
    return f"{pts(d['diff'])} (95% CI {100 * d['low']:.1f} to {100 * d['high']:.1f})"


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
