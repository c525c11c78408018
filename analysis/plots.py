"""The few figure kinds the book repeats, drawn with seaborn from tidy results.

Each function takes a DataFrame (from analysis.results) and returns the figure,
so chapters stay one call per figure and tests can check what was drawn.
"""
import math
import re
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown

from analysis.results import Verdict

sns.set_theme(style="whitegrid", context="notebook")

# The width of the text column, in inches: the one rule every figure follows. The
# typst PDF (A4, 2 cm side margins in `_quarto.yml`) has 6.7 in; the HTML body column
# of Quarto's default book layout is about 800 px, 8.3 in at 96 px per inch. A figure
# at most 6.5 in wide fits both at its natural size, so its fonts stay as drawn.
# `_quarto.yml` sets `fig-width` to it, and `dlbook check` measures every figure.
COLUMN_INCHES = 6.5

METRIC_LABELS = {"loss": "cross-entropy loss", "acc": "accuracy (%)"}

# The one mapping from parameter names and values to what a reader sees, in legends,
# axes and tables alike.
PARAMETER_NAMES = {
    "batch_norm": "batch norm", "init": "initialisation", "weight_decay": "weight decay",
    "flip_p": "flip probability", "crop_padding": "crop padding", "activation": "activation",
    "lr": "learning rate", "l1": "L1 strength", "dropout": "dropout", "optimizer": "optimizer",
    "model": "model", "epochs": "epochs", "seed": "seed", "penalty": "penalty",
    "vflip_p": "vertical flip probability", "adam_eps": "Adam's epsilon",
    "augmentation": "augmentation",
}
VALUE_NAMES = {
    "batch_norm": {True: "with BN", False: "without BN"},
    "init": {"default": "PyTorch's default", "kaiming_normal": "Kaiming normal",
             "xavier_normal": "Xavier normal"},
    "activation": {"relu": "ReLU", "swish": "Swish", "leaky_relu": "leaky ReLU"},
    "split": {"train": "train (eval mode)", "val": "validation"},
    "augmentation": {"none": "none", "vflip": "upside down", "rot180": "rotated 180°"},
    "model": {"resnet8": "ResNet-8", "plain8": "plain-8", "resnet20": "ResNet-20",
              "plain20": "plain-20", "resnet56": "ResNet-56", "plain56": "plain-56"},
}


def label(name: str) -> str:
    """A parameter's name for readers: 'batch_norm' -> 'batch norm'."""
    return PARAMETER_NAMES.get(name, name.replace("_", " "))


def readable(frame: pd.DataFrame, columns=None) -> pd.DataFrame:
    """`frame` with the values of known parameters (`columns`: all) in readers' words:
    True -> 'with BN', 'kaiming_normal' -> 'Kaiming normal'. Columns keep their names."""
    out = frame.copy()
    for col in columns or out.columns:
        if col in VALUE_NAMES and col in out:
            out[col] = out[col].map(lambda v, c=col: VALUE_NAMES[c].get(v, v))
    return out


def curves(long: pd.DataFrame, hue: str | None = None, height: float = 2.6):
    """Loss and accuracy per epoch, train (dashed) vs validation (solid); one line per `hue`.

    `long` has columns epoch, split (train/val), metric (loss/acc), value, and any
    parameter columns; several seeds of one configuration draw a mean with a 95% CI band.
    The two panels and the legend beside them fill the text column (`fit_to_column`).
    """
    long = readable(long, [hue, "split"] if hue else ["split"])
    long["value"] = long["value"].where(long["metric"] != "acc", 100 * long["value"])
    if hue:
        long = long.rename(columns={hue: label(hue)})
        hue = label(hue)
    g = sns.relplot(data=long, x="epoch", y="value", col="metric", hue=hue, style="split",
                    style_order=[VALUE_NAMES["split"]["val"], VALUE_NAMES["split"]["train"]],
                    kind="line", errorbar=("ci", 95), facet_kws={"sharey": False},
                    height=height, aspect=1.3, palette="colorblind" if hue else None)
    for ax, metric in zip(g.axes.flat, g.col_names, strict=True):
        ax.set_title("")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        _epoch_ticks(ax, long["epoch"])
        if metric == "loss":
            _clip_first_epoch_spike(ax, long[long["metric"] == "loss"])
    fit_to_column(g)
    return g.figure


def _epoch_ticks(ax, epochs: pd.Series) -> None:
    """Whole-number epoch ticks, few enough to stay apart in a small panel; a single epoch
    gets one tick (not an axis stretched over 0.999 to 1.001)."""
    if epochs.nunique() == 1:
        only = int(epochs.iloc[0])
        ax.set_xlim(only - 0.5, only + 0.5)
        ax.set_xticks([only])
    else:
        ax.xaxis.set_major_locator(plt.MaxNLocator(5, integer=True))


def _clip_first_epoch_spike(ax, loss: pd.DataFrame) -> None:
    """A loss that starts far above where it settles (a warm-up spike, say) would squash
    every later epoch into a flat line: cap the axis at twice the largest loss after the
    first epoch, and say so on the axis."""
    later = loss.loc[loss["epoch"] > loss["epoch"].min(), "value"]
    if later.empty:
        return
    cap = 2 * later.max()
    if loss["value"].max() > cap:
        ax.set_ylim(top=cap)
        ax.set_ylabel(f"{METRIC_LABELS['loss']} (axis cut at {cap:.2g})")


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
    if hue:
        summary = readable(summary, [hue]).rename(columns={hue: label(hue)})
        hue = label(hue)
    if y.endswith("acc"):  # accuracy in percent, as the prose has it
        summary = summary.assign(**{y: 100 * summary[y]})
        ylabel = f"{ylabel or y} (%)"
    status = summary[diverged] if diverged in summary else pd.Series("finished", summary.index)
    ok = summary[status != "diverged"]
    sns.lineplot(data=ok, x=x, y=y, hue=hue, marker="o", errorbar=("ci", 95), ax=ax,
                 palette="colorblind" if hue else None)
    flagged = False
    for failure in sorted(set(status) - {"finished", "diverged"}):
        runs = summary[status == failure]
        ax.scatter(runs[x], runs[y], marker="o", s=140, facecolors="none",
                   edgecolors="crimson", linewidths=1.8, zorder=5, label=failure)
        flagged = True
    bad = summary[status == "diverged"]
    if not bad.empty:
        ymin = ax.get_ylim()[0]
        ax.scatter(bad[x], np.full(len(bad), ymin), marker="x", color="crimson", s=80,
                   zorder=5, label="diverged", clip_on=False)
        flagged = True
    if flagged or hue:  # below the axes, where it covers no point
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=8,
                  frameon=False)
    if logx:
        ax.set_xscale("log")
    ax.set_ylabel(ylabel or y)
    ax.set_xlabel(label(x))
    return ax.figure


def confusion_heatmap(table: pd.DataFrame, ax=None):
    """A confusion matrix (`results.confusion`) as row percentages: each row, a true class,
    sums to 100; the diagonal is the per-class accuracy."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.3, 5.4))
    share = 100 * table.div(table.sum(axis=1), axis=0)
    sns.heatmap(share, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, square=True,
                cbar_kws={"label": "% of the true class"}, annot_kws={"size": 9}, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return ax.figure


def image_grid(images, titles: list[str], columns: int = 6, size: float = 1.0):
    """uint8 images (N, 3, H, W) in a grid, one title each (two short lines at most)."""
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + 0.32)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(np.asarray(image).transpose(1, 2, 0))
        ax.set_title(title, fontsize=8, pad=2)
    fig.tight_layout(pad=0.2, h_pad=0.5, w_pad=0.2)
    return fig


def strip_against(values: pd.Series, reference: float, name: str, xlabel: str):
    """One dot per run along a line, with a dashed reference value (e.g. ln 10)."""
    fig, ax = plt.subplots(figsize=(6, 2.2))
    sns.stripplot(x=values, ax=ax, size=9, color="C0", jitter=False)
    ax.axvline(reference, ls="--", color="k")
    ax.text(reference, -0.42, f" {name}", ha="left", va="bottom")
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.xaxis.set_major_formatter("{x:.3f}")
    ax.set_xlabel(xlabel)
    return fig


def class_samples(cifar, per_class: int = 8, seed: int = 0):
    """`per_class` random training images of every class, one row per class."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(cifar.classes), per_class, figsize=(6.3, 8.3))
    for c, name in enumerate(cifar.classes):
        idx = torch.nonzero(cifar.train_y == c).flatten()
        pick = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
        for ax, i in zip(axes[c], pick, strict=False):
            ax.imshow(cifar.train_x[i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    return fig


def mistakes(pred: pd.DataFrame, cifar, n: int = 24):
    """The `n` test images a network got wrong with the highest confidence: predicted class
    and its probability, and the true class."""
    wrong = pred[pred["label"] != pred["predicted"]].sort_values("confidence", ascending=False)
    wrong = wrong.head(n)
    titles = [f"{cifar.classes[r.predicted]} {100 * r.confidence:.0f}%\n"
              f"(is {cifar.classes[r.label]})" for r in wrong.itertuples()]
    return image_grid(cifar.test_x[wrong["index"].to_numpy()], titles)


def channel_stats(found) -> pd.DataFrame:
    """Lab 1's normalisation finding as a table: per channel, mean and std before and after."""
    return pd.DataFrame({"channel": ["red", "green", "blue"], "mean": found.mean,
                         "std": found.std, "mean after": found.mean_after,
                         "std after": found.std_after}).round(4)


def memory(total: float | None, peak: float | None) -> str:
    """A run's accelerator memory in words (plain text, for an inline value)."""
    if total is None:
        return "nothing to record, since they ran on the CPU"
    return (f"{total / 2**30:.0f} GiB in total, at most {peak / 2**20:,.0f} MiB allocated by a "
            "run (the whole dataset as uint8 tensors plus the model, its gradients and a "
            "batch's activations)")


def run_summary(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per seed of a single setting: final and best validation accuracy, the best
    epoch and the epoch of least validation loss, test accuracy of the best and the last
    checkpoint (%), wall seconds."""
    best = metrics.loc[metrics.groupby("seed")["val_acc"].idxmax(), ["seed", "epoch"]]
    least = metrics.loc[metrics.groupby("seed")["val_loss"].idxmin(), ["seed", "epoch"]]
    out = (runs[["seed", "final_val_acc", "best_val_acc", "test_best_acc", "test_final_acc",
                 "seconds"]]
           .merge(best.rename(columns={"epoch": "best_epoch"}), on="seed")
           .merge(least.rename(columns={"epoch": "min_val_loss_epoch"}), on="seed"))
    out = percent(out).round({"wall seconds": 0})
    return out


def against(diffs: dict, column: str, accuracy: dict, initial_loss: dict | None = None,
            reference: str = "default") -> pd.DataFrame:
    """Settings against a reference setting: mean final accuracy (%), and each setting's
    difference to the reference (points, with its 95% CI); the reference shows a dash."""
    rows = []
    for name in [reference, *diffs]:
        d = diffs.get(name)
        row = {column: name}
        if initial_loss is not None:
            row["initial loss"] = round(initial_loss[name], 3)
        row["final val acc"] = round(100 * accuracy[name], 1)
        row["difference (points)"] = np.nan if d is None else round(100 * d.diff, 1) + 0.0
        row["95% CI"] = "–" if d is None or d.verdict is Verdict.UNJUDGED else \
            f"{100 * d.low:.1f} to {100 * d.high:.1f}"
        rows.append(row)
    return readable(pd.DataFrame(rows))


def filters(weight, size: float = 0.9):
    """First-layer convolution filters (out, 3, k, k) as colour images, each rescaled to
    its own range: the pattern a filter responds to most."""
    w = np.asarray(weight, dtype=float)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    high = w.max(axis=(1, 2, 3), keepdims=True)
    scaled = (w - low) / np.maximum(high - low, 1e-12)
    fig, axes = plt.subplots(1, len(w), figsize=(len(w) * size, size + 0.3), squeeze=False)
    for i, (ax, f) in enumerate(zip(axes.flat, scaled, strict=True)):
        ax.imshow(f.transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(f"filter {i + 1}", fontsize=7)
        ax.axis("off")
    fig.tight_layout(pad=0.2)
    return fig


# Readable names for the columns the book's tables show.
COLUMN_NAMES = {
    "final_val_acc": "final val acc", "best_val_acc": "best val acc",
    "best_epoch": "best epoch", "val_acc": "val acc",
    "clean_train_acc": "train acc", "train_acc": "train acc", "gap": "gap (points)",
    "test_best_acc": "test acc (best ckpt)",
    "test_final_acc": "test acc (last epoch)", "crop_padding": "crop padding",
    "flip_p": "flip prob.", "weight_decay": "weight decay", "batch_norm": "batch norm",
    "init_val_loss": "initial loss", "init_val_acc": "initial acc", "ci_low": "95% CI low",
    "ci_high": "95% CI high", "min_val_loss_epoch": "min val loss epoch",
    "diverged_at_epoch": "diverged at epoch", "diverged_at_step": "diverged at step",
    "diff": "difference (points)", "total_s": "total seconds", "longest_s": "longest run (s)",
    "seconds": "wall seconds",
    **{k: v for k, v in PARAMETER_NAMES.items() if k not in ("flip_p",)},
}
ACCURACY_COLUMNS = ("acc", "gap", "mean", "ci_low", "ci_high", "diff")


def percent(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table for reading: accuracy-like columns (names ending in acc, gap, mean or ci_*)
    as percentages, every known column under its readable name."""
    out = readable(table)  # values in readers' words while the columns keep their names
    for col in out.columns:
        if str(col).endswith(ACCURACY_COLUMNS) and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = (100 * out[col]).round(digits) + 0.0
    return out.rename(columns=COLUMN_NAMES)


def table(frame: pd.DataFrame, index: bool | None = None, names: dict | None = None,
          markdown=()) -> Markdown:
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
    proportion to their content: keep it to the columns the text needs.

    Cell text is escaped so that it stays plain text (`@32x32` is no citation), except
    in the columns named in `markdown` (as in `frame`), whose text is markdown: a
    cross-reference `@sec-x` there renders as a link to that section."""
    out = frame
    if index is None:
        index = any(name is not None for name in out.index.names) or not (
            pd.api.types.is_integer_dtype(out.index) and out.index.nlevels == 1)
    if index:
        out = out.reset_index()
        out.columns = ["" if str(c) in ("index", "level_0") and c not in frame.columns else c
                       for c in out.columns]
    raw = [c in set(markdown) for c in out.columns]
    out = readable(out).rename(columns={**COLUMN_NAMES, **(names or {})})
    header = [_cell_text(str(c)) for c in out.columns]
    columns = [[" ".join(str(v).split()) for v in out.iloc[:, k]] if raw[k]
               else _column_texts(out.iloc[:, k]) for k in range(out.shape[1])]
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
        # A small negative number rounded to nothing is zero, not "-0".
        plain = [t[1:] if t and re.fullmatch(r"-0(\.0*)?", t) else t for t in plain]
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
    value = round(100 * float(x), digits) + 0.0  # + 0.0: no "-0.0"
    unit = "point" if abs(value) == 1 else "points"
    return f"{value:.{digits}f} {unit}"


def interval(d, unit=pts) -> str:
    """A `results.Difference` for prose: '1.2 points (95% CI 0.3 to 2.1)'; without an
    interval, '1.2 points (not judged)'. `unit` formats each of the three numbers (`pts` for
    accuracies, `num` for counts and other plain numbers)."""
    if d.verdict is Verdict.UNJUDGED:
        return f"{unit(d.diff)} (not judged)"
    if unit is pts:  # 'points' once, after the value: '1.2 points (95% CI 0.3 to 2.1)'
        digits = 1  # more where one decimal would hide the interval ("0.0 to 0.0")
        while digits < 3 and round(100 * d.low, digits) == round(100 * d.high, digits):
            digits += 1
        low, high = (round(100 * v, digits) + 0.0 for v in (d.low, d.high))
        return f"{pts(d.diff, digits)} (95% CI {low:.{digits}f} to {high:.{digits}f})"
    return f"{unit(d.diff)} (95% CI {unit(d.low)} to {unit(d.high)})"


def judged(d, unit=pts, margin: float | None = None) -> str:
    """`interval` with its verdict: '3.2 points (95% CI 2.1 to 4.3), beyond noise'; 'within
    noise' where the interval contains zero; with a `margin`, whether the whole interval lies
    inside it (equivalent, even when beyond noise) or, within noise, not (inconclusive); no
    verdict without an interval."""
    if d.verdict is Verdict.UNJUDGED:
        return interval(d, unit)
    if d.verdict is not Verdict.WITHIN:
        if margin is not None and d.equivalent(margin):
            return f"{interval(d, unit)}, beyond noise but within ±{unit(margin)}: equivalent"
        return f"{interval(d, unit)}, beyond noise"
    if margin is None:
        return f"{interval(d, unit)}, within noise"
    if d.equivalent(margin):
        return f"{interval(d, unit)}, within ±{unit(margin)}: equivalent"
    return f"{interval(d, unit)}, within noise but wider than ±{unit(margin)}: inconclusive"


def size(d, unit=pts) -> str:
    """The same difference as a size, for prose that already says which way it goes
    ("lowers it by ..."): '4.1 points (95% CI 0.3 to 7.8)'."""
    if d.diff >= 0:
        return interval(d, unit)
    return interval(replace(d, diff=-d.diff, low=-d.high, high=-d.low), unit)


def times(x: float, decimals: int = 1) -> str:
    """1.956 -> '2.0×'."""
    return f"{x:,.{decimals}f}×"


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


# ---------------------------------------------------------------- Part 1's figures and tables

def yes_no(value: bool | None) -> str:
    """A rule's yes/no answer in words: 'yes', 'no', or 'undecided' (None)."""
    return "undecided" if value is None else "yes" if value else "no"


def seed_points(runs: pd.DataFrame, x: str, order: list, y: str = "final_val_acc",
                ylabel: str = "final validation accuracy (%)", ax=None):
    """One value per run and setting (`x`, in `order`): grey dots joined per seed, and the
    mean with its 95% interval over seeds in black. The axis spans at least 6 points, so
    that single runs do not look far apart."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.0))
    d = runs.assign(v=100 * runs[y] if y.endswith("acc") else runs[y])
    per_seed = d.pivot_table(index="seed", columns=x, values="v").reindex(columns=order)
    for _, s in per_seed.iterrows():
        ax.plot(range(len(order)), s.values, color="0.8", lw=0.8, zorder=1)
    sns.stripplot(data=d, x=x, y="v", order=order, color="0.55", jitter=False, size=4, ax=ax)
    sns.pointplot(data=d, x=x, y="v", order=order, errorbar=("ci", 95), color="k",
                  linestyle="none", markers="D", capsize=0.1, ax=ax)
    low, high = ax.get_ylim()
    middle = (low + high) / 2
    ax.set_ylim(min(low, middle - 3), max(high, middle + 3))
    ax.set(xlabel="", ylabel=ylabel)
    ax.figure.tight_layout()
    return ax.figure


def bn_means(stats: pd.DataFrame):
    """tf-01: every channel's mean at four points around its BN layer, in units of its std
    (left), and each channel's output mean against its learned shift (right)."""
    names = {"in": "input", "norm": "normalised", "out": "after γ, β", "act": "after ReLU"}
    long = pd.concat([stats.assign(stage=name, z=stats[f"{s}_mean"] / stats[f"{s}_std"])
                      for s, name in names.items()], ignore_index=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.3, 3.0),
                                 gridspec_kw={"width_ratios": [1.5, 1]})
    sns.stripplot(data=long, x="stage", y="z", hue="layer", dodge=True, size=2.5, alpha=0.6,
                  palette="colorblind", ax=ax, order=list(names.values()))
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="", ylabel="channel mean / channel std")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(title="layer", fontsize=8, title_fontsize=8, markerscale=2)
    sns.scatterplot(data=stats, x="beta", y="out_mean", hue="layer", s=10, palette="colorblind",
                    ax=bx, legend=False)
    lims = [min(stats["beta"].min(), stats["out_mean"].min()),
            max(stats["beta"].max(), stats["out_mean"].max())]
    bx.plot(lims, lims, color="0.6", lw=1)
    bx.set(xlabel="learned shift β", ylabel="output mean")
    fig.tight_layout()
    return fig


def bn_layers(stats: pd.DataFrame, near_zero_share) -> pd.DataFrame:
    """tf-01's table: per BN layer, channel means at each point, γ, |β|, zero-mean share."""
    by = stats.groupby("layer", sort=False)
    seeds = stats["seed"].nunique()
    return pd.DataFrame({
        "channels": by.size() // seeds,
        "|mean| in": by["in_mean"].apply(lambda v: v.abs().mean()).round(2),
        "|mean| out": by["out_mean"].apply(lambda v: v.abs().mean()).round(2),
        "mean after ReLU": by["act_mean"].mean().round(2),
        "|β|": by["beta"].apply(lambda v: v.abs().mean()).round(2),
        "zero-mean out (%)": by.apply(lambda d: round(100 * near_zero_share(d, "out"), 1),
                                      include_groups=False),
    }).reset_index()


def captured(act, grad):
    """tf-02: each channel of an activation caught mid-forward (top) and its gradient caught
    mid-backward (bottom), for the first image."""
    fig, axes = plt.subplots(2, act.shape[1], figsize=(6.3, 2.5))
    top = float(grad[0].abs().max())
    for c in range(act.shape[1]):
        axes[0, c].imshow(act[0, c], cmap="magma")
        axes[1, c].imshow(grad[0, c], cmap="coolwarm", vmin=-top, vmax=top)
        axes[0, c].set_title(f"channel {c + 1}", fontsize=8)
        for ax in axes[:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("forward", fontsize=8)
    axes[1, 0].set_ylabel("gradient", fontsize=8)
    fig.tight_layout()
    return fig


def digits_figure(runs: pd.DataFrame, mixups: pd.DataFrame):
    """tf-03: digits test accuracy per augmentation over seeds (left) and the 6/9 mix-ups
    per run (right)."""
    names = VALUE_NAMES["augmentation"]
    order = [names[a] for a in ("none", "vflip", "rot180") if a in set(runs["augmentation"])]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.3, 2.9))
    seed_points(readable(runs, ["augmentation"]), "augmentation", order, y="test_acc",
                ylabel="test accuracy (%)", ax=ax)
    ax.tick_params(axis="x", labelsize=8)
    m = mixups.rename(index=names).reindex(order).rename(
        columns={"six_as_nine": "6 called 9", "nine_as_six": "9 called 6"})
    m.plot.bar(ax=bx, rot=0, color=sns.color_palette("colorblind", 2))
    bx.tick_params(axis="x", labelsize=8)
    bx.set(xlabel="", ylabel="test images per run")
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def digits_table(ci: pd.DataFrame, vs_none: dict, mixups: pd.DataFrame) -> pd.DataFrame:
    """tf-03's table: accuracy with interval, the difference to none, mix-ups per run."""
    rows = []
    for a in ci.index:
        r = ci.loc[a]
        rows.append({"augmentation": VALUE_NAMES["augmentation"][a],
                     "test accuracy": f"{pct(r['mean'])} ({pct(r['ci_low'])} to "
                                      f"{pct(r['ci_high'])})",
                     "vs none": "–" if a == "none" else interval(vs_none[a]),
                     "6 called 9": round(mixups.loc[a, "six_as_nine"], 2),
                     "9 called 6": round(mixups.loc[a, "nine_as_six"], 2)})
    return pd.DataFrame(rows)


def step_sizes(steps: pd.DataFrame):
    """tf-04: Adam's RMS step over the learning rate per epoch, one line per epsilon."""
    eps = sorted(steps["adam_eps"].unique())
    r = steps.assign(eps=steps["adam_eps"].map(num))
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    sns.lineplot(data=r, x="epoch", y="update_ratio", hue="eps", marker="o", errorbar=None,
                 palette="viridis", hue_order=[num(e) for e in eps], ax=ax)
    ax.set(yscale="log", ylabel="RMS step / learning rate")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(title="epsilon", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def adam_case(eps: float, lr: float) -> str:
    return f"ε {num(eps)}\nlr {num(lr)}"


def adam_cases(runs: pd.DataFrame, motion: pd.DataFrame):
    """tf-04: final accuracy (left) and the loss's step-to-step swing (right) per epsilon
    and learning rate, over seeds."""
    cases = runs[["adam_eps", "lr"]].drop_duplicates().sort_values(["adam_eps", "lr"])
    order = [adam_case(e, lr) for e, lr in zip(cases["adam_eps"], cases["lr"], strict=True)]

    def named(d):
        return d.assign(case=[adam_case(e, lr) for e, lr in zip(d["adam_eps"], d["lr"],
                                                               strict=True)])

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.3, 3.0))
    seed_points(named(runs), "case", order, ax=ax)
    seed_points(named(motion), "case", order, y="swing", ax=bx,
                ylabel="median step-to-step loss swing")
    for a in (ax, bx):
        a.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def adam_table(cases: pd.DataFrame) -> pd.DataFrame:
    """tf-04's table, one row per epsilon and learning rate."""
    t = cases.reset_index()
    return pd.DataFrame({
        "epsilon": t["adam_eps"].map(num), "learning rate": t["lr"].map(num),
        "final val. accuracy (%)": (100 * t["final"]).round(1),
        "spread (points)": (100 * t["spread"]).round(1),
        "diverged": [f"{int(d)} of {int(n)}" for d, n in zip(t["diverged"], t["runs"],
                                                            strict=True)],
        "spikes per 1,000 steps": t["spikes"].round(1),
        "swing (%)": (100 * t["swing"]).round(1)})


def cells_table(ci: pd.DataFrame, both_vs: dict, gap: dict, order: list) -> pd.DataFrame:
    """tf-05's table: per cell, accuracy with interval, the combination minus it, the gap."""
    return pd.DataFrame([{
        "cell": c,
        "final val. accuracy": f"{pct(ci.loc[c, 'mean'])} ({pct(ci.loc[c, 'ci_low'])} to "
                               f"{pct(ci.loc[c, 'ci_high'])})",
        "L2 + dropout minus this": "–" if c not in both_vs else interval(both_vs[c]),
        "gap, last epoch (points)": round(100 * gap[c], 1) + 0.0,
    } for c in order])


def dead_units(runs: pd.DataFrame, metrics: pd.DataFrame, dead_share):
    """tf-06: the share of dead hidden units per epoch (epoch 0: the untrained network),
    ReLU against leaky ReLU, one panel per learning rate."""
    init = runs.assign(epoch=0)[["activation", "lr", "seed", "epoch"]].join(
        runs[[c for c in runs if c.startswith("init_dead_")]]
        .rename(columns=lambda c: c.removeprefix("init_")))
    dead = pd.concat([init, metrics], ignore_index=True)
    dead = readable(dead.assign(dead=100 * dead_share(dead)), ["activation"])
    g = sns.relplot(data=dead, x="epoch", y="dead", hue="activation", col="lr", col_wrap=3,
                    kind="line", errorbar=("ci", 95), height=2.0, aspect=1.2,
                    palette="colorblind", facet_kws={"sharey": False})
    g.set_axis_labels("epoch", "dead units (%)")
    g.set_titles("lr {col_name}")
    fit_to_column(g)
    return g.figure


def runs_by_rate(metrics: pd.DataFrame):
    """tf-06: validation accuracy per epoch of every run, one panel per learning rate."""
    m = readable(metrics, ["activation"]).assign(acc=100 * metrics["val_acc"])
    g = sns.relplot(data=m, x="epoch", y="acc", hue="activation", units="seed", estimator=None,
                    col="lr", col_wrap=3, kind="line", height=2.0, aspect=1.2,
                    palette="colorblind", lw=0.9)
    g.set_axis_labels("epoch", "val. accuracy (%)")
    g.set_titles("lr {col_name}")
    fit_to_column(g)
    return g.figure


def per_rate(at: dict, what: str, table: pd.DataFrame) -> str:
    """tf-06: a difference at every rate where both activations train, in plain words
    ('lr 0.01: 0.3 (95% CI -0.5 to 1.1), within noise; ...'; 'no rate' if none)."""
    rates = [lr for lr in sorted(at) if table.loc[(lr, "relu"), "trained"]
             and table.loc[(lr, "leaky_relu"), "trained"]]
    return "; ".join(f"lr {num(lr)}: {judged(at[lr][what], unit=num)}" for lr in rates) \
        or "no rate"


def dead_by_rate(table: pd.DataFrame) -> str:
    """tf-06: the share of dead units at the last epoch, ReLU against leaky ReLU, per rate
    ('lr 0.01: 1% against 1%; ...'; 'none measured' where every run diverged at once)."""
    def share(lr, activation):
        value = table.loc[(lr, activation), "dead"]
        return "none measured" if pd.isna(value) else pct(value, 0)

    rates = sorted(table.index.get_level_values("lr").unique())
    return "; ".join(f"lr {num(lr)}: {share(lr, 'relu')} against {share(lr, 'leaky_relu')}"
                     for lr in rates)


def stability_table(table: pd.DataFrame) -> pd.DataFrame:
    """tf-06's table, one row per learning rate and activation."""
    t = table.reset_index()
    return pd.DataFrame({
        "learning rate": t["lr"].map(num),
        "activation": t["activation"].map(VALUE_NAMES["activation"]),
        "diverged": [f"{int(d)} of {int(n)}" for d, n in zip(t["diverged"], t["runs"],
                                                            strict=True)],
        "collapsed": [f"{int(c)} of {int(n)}" for c, n in zip(t["collapsed"], t["runs"],
                                                             strict=True)],
        "final val. acc. (%)": (100 * t["final"]).round(1),
        "spread (points)": (100 * t["spread"]).round(1),
        "spikes per 1,000 steps": t["spikes"].round(1),
        "dead units (%)": (100 * t["dead"]).round(1)})


def sparsity_pairs(found) -> str:
    """tf-07: each matched L1/L2 pair in plain words."""
    from analysis.findings import MARGIN

    return "; ".join(
        f"{p['l1']} left {pct(found.share(p['l1']))} of the weights below the threshold and "
        f"{p['l2']} {pct(found.share(p['l2']))}, a difference of {judged(p['sparse'])}, at "
        f"final accuracies that differ by {judged(p['acc'], margin=MARGIN)}"
        for p in found.pairs) \
        or "no L1 setting has an L2 setting to pair with"


def sparsity(found, threshold: float):
    """tf-07: the share of weights below each threshold per penalty (left), and per layer
    below `threshold` (right)."""
    penalties = found.penalties
    palette = dict(zip(penalties, sns.color_palette("colorblind", len(penalties)),
                       strict=True))
    share = found.overall.groupby(["penalty", "threshold"])["fraction"].mean()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.3, 2.9))
    for p in penalties:
        s = share[p]
        ax.plot(s.index, 100 * s.values, marker="o", color=palette[p], label=p)
    ax.set(xscale="log", xlabel="threshold on |w|", ylabel="weights below (%)")
    ax.legend(fontsize=8)
    layers = found.layers
    per_layer = (layers[layers["threshold"] == threshold]
                 .groupby(["layer", "penalty"], sort=False)["fraction"].mean().mul(100)
                 .reset_index())
    sns.barplot(data=per_layer, x="layer", y="fraction", hue="penalty", hue_order=penalties,
                palette=palette, ax=bx, legend=False)
    bx.set(xlabel="", ylabel=f"below {num(threshold)} (%)")
    bx.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def sparsity_table(found, thresholds) -> pd.DataFrame:
    """tf-07's table: per penalty, final accuracy and the share below each threshold (%)."""
    share = found.overall.groupby(["penalty", "threshold"])["fraction"].mean()
    return pd.DataFrame([{
        "penalty": p, "final val. acc. (%)": round(100 * found.accuracy[p], 1),
        **{f"|w| < {t:g} (%)": round(100 * share[(p, t)], 1) for t in thresholds},
    } for p in found.penalties])


def cropped_away(padding: float, size: int = 32) -> float:
    """The largest share of an image's area a random crop of the image padded by `padding`
    pixels can cut away (shifted by `padding` on both axes)."""
    return 1 - ((size - padding) / size) ** 2


# ---------------------------------------------------------------- Lab 2's figures and tables

def rate(x) -> str:
    """A learning rate for prose, or 'none' where there is none (None or NaN)."""
    return "none" if x is None or (isinstance(x, float) and math.isnan(x)) else num(x)


def rates(values) -> str:
    """'lr 0.1', 'lr 0.1 and 1', or 'none'."""
    values = [num(v) for v in values]
    if not values:
        return "none"
    return "lr " + (values[0] if len(values) == 1
                    else ", ".join(values[:-1]) + " and " + values[-1])


def failures(runs: pd.DataFrame, collapsed: pd.DataFrame | None = None) -> pd.DataFrame:
    """`runs` with status 'collapsed' for the runs that finished without beating chance
    (the rows of `collapsed` if given, else every such run), for figures that mark them."""
    from analysis import results

    bad = (runs["key"].isin(collapsed["key"]) if collapsed is not None
           else results.failed(runs) & (runs["status"] == "finished"))
    return runs.assign(status=runs["status"].mask(bad, "collapsed"))


def augment_grid(cells: pd.DataFrame):
    """Lab 2's crop x flip grid as a heat map of final accuracy (%)."""
    from analysis.findings.labs import cell_name

    paddings = sorted({int(c.split(",")[0].split()[1]) for c in cells.index})
    flips = sorted({float(c.split()[-1]) for c in cells.index})
    grid = pd.DataFrame([[100 * cells["final"].get(cell_name(p, f), np.nan) for p in paddings]
                         for f in flips], index=[num(f) for f in flips], columns=paddings)
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", annot_kws={"size": 10},
                cbar_kws={"label": "final val. accuracy (%)"}, ax=ax)
    ax.set(xlabel="crop padding (pixels)", ylabel="flip probability")
    fig.tight_layout()
    return fig


def gap_table(cells: pd.DataFrame, gaps: dict) -> pd.DataFrame:
    """lab2-a's table: per cell, accuracies (%), the gap and its change against none."""
    return pd.DataFrame([{
        "setting": c, "final val. acc.": round(100 * r["final"], 1),
        "train acc.": round(100 * r["clean_train_acc"], 1),
        "val. acc.": round(100 * r["val_acc"], 1), "gap (points)": round(100 * r["gap"], 1) + 0.0,
        "gap change (points)": "–" if c not in gaps else interval(gaps[c]),
    } for c, r in cells.iterrows()])


def rate_table(table: pd.DataFrame) -> pd.DataFrame:
    """lab2-b-lr's table: per rate, failed runs and final accuracy, without and with BN."""
    t = table.reset_index()
    out = {}
    for bn, name in ((False, "without BN"), (True, "with BN")):
        d = t[t["batch_norm"] == bn].set_index("lr")
        out[f"failed, {name}"] = {lr: f"{int(r['failed'])} of {int(r['runs'])}"
                                  for lr, r in d.iterrows()}
        out[f"accuracy (%), {name}"] = (100 * d["final"]).round(1)
    frame = pd.DataFrame(out).sort_index(ascending=False)
    frame.index = [num(v) for v in frame.index]
    return frame.rename_axis("learning rate").reset_index()


def rate_panels(metrics: pd.DataFrame):
    """lab2-c-lr: validation accuracy per epoch, one panel per learning rate."""
    shown = metrics.assign(rate=metrics["lr"].map(lambda v: f"lr {num(v)}"),
                           val_pct=100 * metrics["val_acc"])
    order = [f"lr {num(v)}" for v in sorted(metrics["lr"].unique(), reverse=True)]
    g = sns.relplot(data=shown, x="epoch", y="val_pct", col="rate", col_order=order,
                    col_wrap=3, kind="line", errorbar=("ci", 95), height=1.9, aspect=1.1)
    g.set_titles("{col_name}")
    g.set_axis_labels("epoch", "val. accuracy (%)")
    for ax in g.axes.flat:
        ax.axhline(10, ls=":", color="0.5")
        ax.xaxis.set_major_locator(plt.MaxNLocator(4, integer=True))
    fit_to_column(g)
    return g.figure


def first_steps(early: pd.DataFrame, ln10: float):
    """lab2-c-lr: the loss of every step of the first epochs at two rates, per seed."""
    top = early["lr"].max()
    blow = early[early["lr"] == top]
    # Show the steps where something happens: a few times the step of the peak loss.
    peak = blow.loc[blow["loss"].idxmax(), "t"] if blow["loss"].notna().any() else 10
    fig, ax = plt.subplots(figsize=(6.3, 3))
    ax.set_xlim(0, min(early["t"].max(), max(25, 4 * peak)))
    for (lr, seed), run in early.groupby(["lr", "seed"]):
        ax.plot(run["t"], run["loss"], lw=0.9, color="crimson" if lr == top else "C0",
                alpha=0.8, label=f"lr {num(lr)}" if seed == early["seed"].min() else None)
    ax.axhline(ln10, ls=":", color="0.4", label="ln 10 (uniform guess)")
    ax.set(yscale="log", xlabel="training step", ylabel="training loss (batch mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run of a sweep: rate, seed, status, accuracies (%) and where it diverged."""
    cols = ["lr", "seed", "status", "final_val_acc", "best_val_acc", "test_best_acc"] + \
        [c for c in ("diverged_at_epoch", "diverged_at_step") if c in runs]
    out = percent(runs[cols].sort_values(["lr", "seed"], ascending=[False, True]))
    out["learning rate"] = out["learning rate"].map(num)
    return out


def l2_table(table: pd.DataFrame, accuracy: dict) -> pd.DataFrame:
    """lab2-c-l2's table: per strength, accuracies and gap, and the change against none."""
    return pd.DataFrame([{
        "weight decay": num(w) if w else "0", "final val. acc.": round(100 * r["final"], 1),
        "train acc.": round(100 * r["clean_train_acc"], 1),
        "val. acc.": round(100 * r["val_acc"], 1), "gap (points)": round(100 * r["gap"], 1) + 0.0,
        "change vs none (points)": "–" if w not in accuracy else interval(accuracy[w]),
    } for w, r in table.sort_index(ascending=False).iterrows()])


def l2_figure(runs: pd.DataFrame, last: pd.DataFrame):
    """lab2-c-l2: final accuracy and last-epoch gap against weight decay, over seeds."""
    both = runs.merge(last[["key", "gap"]], on="key")
    both["strength"] = both["weight_decay"].map(lambda v: "0" if v == 0 else f"{v:g}")
    order = [("0" if v == 0 else f"{v:g}") for v in sorted(both["weight_decay"].unique())]
    fig, axes = plt.subplots(1, 2, figsize=(6.3, 3))
    sns.pointplot(data=both.assign(v=100 * both["final_val_acc"]), x="strength", y="v",
                  order=order, errorbar=("ci", 95), capsize=0.1, ax=axes[0])
    sns.pointplot(data=both.assign(v=100 * both["gap"]), x="strength", y="v", order=order,
                  errorbar=("ci", 95), capsize=0.1, ax=axes[1], color="C1")
    axes[1].axhline(0, color="0.5", lw=0.8)
    axes[0].set_ylabel("final val. accuracy (%)")
    axes[1].set_ylabel("train - validation (points)")
    for ax in axes:
        ax.set_xlabel("weight decay")
    fig.tight_layout()
    return fig


def weight_histograms(weights: pd.DataFrame):
    """lab2-c-l1: per layer, the weights' distribution per penalty (shared bins, log
    counts); the legend in the sixth panel."""
    layers = list(dict.fromkeys(weights["layer"]))
    fig, axes = plt.subplots(2, 3, figsize=(6.3, 4.6))
    for i, (ax, layer) in enumerate(zip(axes.flat, layers, strict=False)):
        these = weights[weights["layer"] == layer]
        bins = np.linspace(these["weight"].min(), these["weight"].max(), 61)
        sns.histplot(data=these, x="weight", hue="penalty", bins=bins, element="step",
                     fill=False, ax=ax, legend=i == len(layers) - 1)
        ax.set(yscale="log", title=layer, xlabel="weight" if i >= 3 else "")
        ax.xaxis.set_major_locator(plt.MaxNLocator(3, symmetric=True))
        ax.tick_params(labelsize=8)
    legend = axes.flat[len(layers) - 1].get_legend()
    axes.flat[-1].legend(legend.legend_handles, [t.get_text() for t in legend.get_texts()],
                         title="penalty", loc="center")
    legend.remove()
    axes.flat[-1].axis("off")
    fig.tight_layout()
    return fig


def weight_cdfs(weights: pd.DataFrame, threshold: float):
    """lab2-c-l1: cumulative distributions of |w| per layer and penalty (log scale)."""
    g = sns.displot(data=weights.assign(magnitude=weights["weight"].abs().clip(lower=1e-7)),
                    x="magnitude", hue="penalty", col="layer", col_wrap=3, kind="ecdf",
                    log_scale=True, height=2.2)
    g.set_titles("{col_name}")
    g.set_axis_labels("|w|", "share of weights")
    for ax in g.axes.flat:
        ax.axvline(threshold, ls="--", color="k", lw=1)
    fit_to_column(g)
    return g.figure


def layer_sparsity(found, threshold: float) -> pd.DataFrame:
    """lab2-c-l1's table: per layer, the share of weights below `threshold` per penalty (%),
    all layers together, and each penalty's final accuracy."""
    layers = found.layers[found.layers["threshold"] == threshold]
    table = (100 * layers.pivot_table(index="layer", columns="penalty", values="fraction",
                                      aggfunc="mean", sort=False)).round(1)
    table.loc["all layers"] = [round(100 * found.share(p, threshold), 1) for p in table.columns]
    table.loc["final val. acc."] = [round(100 * found.accuracy[p], 1) for p in table.columns]
    return table[found.penalties].reset_index().rename(columns={"layer": ""})


# ---------------------------------------------------------------- Lab 3's figures and tables

RECIPE_KEYS = ("model", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
               "warmup_epochs", "batch_size", "epochs", "sizes_train", "crop_padding", "flip_p",
               "label_smoothing")


def recipe(run: pd.Series) -> pd.DataFrame:
    """A training run's recipe, one row per hyperparameter, in readers' words."""
    words = {"model": VALUE_NAMES["model"], "optimizer": {"sgd": "SGD", "adam": "Adam"},
             "schedule": {"cosine": "cosine", "step": "step", "none": "constant"},
             "nesterov": {True: "yes", False: "no"}}
    names = {"sizes_train": "training images", "lr": "learning rate",
             "warmup_epochs": "warm-up epochs", "batch_size": "batch size",
             "label_smoothing": "label smoothing", "nesterov": "Nesterov momentum"}
    values = []
    for k in RECIPE_KEYS:
        v = run[k]
        v = words[k].get(v, v) if k in words else v
        values.append(f"{int(v):,}" if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                      else num(v) if isinstance(v, float) else str(v))
    return pd.DataFrame({"hyperparameter": [names.get(k, label(k)) for k in RECIPE_KEYS],
                         "value": values})


def ci_text(ci: pd.Series, digits: int = 1) -> str:
    """A `mean_ci` row's interval in words: '90.1% to 91.3%', or 'none (one seed)'."""
    if ci["n"] < 2:
        return "none (one seed)"
    return f"{pct(ci['ci_low'], digits)} to {pct(ci['ci_high'], digits)}"


def class_bars(table: pd.DataFrame):
    """Accuracy per class (rows) of several networks (columns), as grouped bars (%)."""
    shown = (100 * table).rename_axis("class").reset_index().melt(
        id_vars="class", var_name="network", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(6.3, 3.2))
    sns.barplot(data=shown, x="class", y="accuracy", hue="network", palette="colorblind", ax=ax)
    ax.set(xlabel="", ylabel="test accuracy (%)", ylim=(0, 119))
    ax.set_yticks(range(0, 101, 20))
    ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def revisions(commits) -> str:
    """Code revisions in words: 'd1d6cf3', 'd1d6cf3 and 58cd1ad', a '+dirty' one said as
    'with uncommitted changes'; 'unknown' without any."""
    words = [c.removesuffix("+dirty") + (" (with uncommitted changes)" if c.endswith("+dirty")
                                         else "") for c in commits]
    if not words:
        return "unknown"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
# ---------------------------------------------------------------- Part 1's costs (tf-08, tf-09)

def maybe(x, fmt=num, missing: str = "none") -> str:
    """`fmt(x)`, or `missing` where there is no value (None or NaN): a measurement that was
    left out or never taken."""
    if x is None or (isinstance(x, float | np.floating) and not math.isfinite(x)):
        return missing
    return fmt(x)


def span(values, fmt=num, missing: str = "none") -> str:
    """'fmt(a) to fmt(b)' for the smallest and largest of `values` (NaN left out), 'fmt(a)'
    where both read the same, `missing` where no value is left."""
    values = [v for v in values if maybe(v, str, "") != ""]
    if not values:
        return missing
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low} to {high}"


def millions(n: float) -> str:
    """819093576 -> '819.1M'."""
    return f"{n / 1e6:,.1f}M"


DEVICES = {"cpu": "CPU", "cuda": "GPU"}  # PyTorch's device names, for readers


def separable_speedups(lat: pd.DataFrame, ratios: pd.Series, labels: dict):
    """tf-08's speedups: per device (rows) and pass (columns), the measured speedup of each
    row of `lat` (sane latency rows: shape, device, pass, batch, speedup), one colour per
    batch size, beside its MAC ratio (`ratios`, by shape; black diamonds). `labels` names
    the shapes on the y axis, in its order. Lines: the claimed 9x (dotted), no speedup
    (dashed)."""
    devices = sorted(lat["device"].unique()) or ["cpu"]
    passes = ["forward", "forward+backward"]
    batches = sorted(lat["batch"].unique())
    position = {shape: i for i, shape in enumerate(labels)}
    colours = dict(zip(batches, sns.color_palette("viridis", len(batches)), strict=True))
    fig, axes = plt.subplots(len(devices), 2, figsize=(COLUMN_INCHES, 0.5 + 2.9 * len(devices)),
                             sharey=True, squeeze=False)
    right = max(10.0, float(lat["speedup"].max()) + 0.5) if len(lat) else 10.0
    for row, device in zip(axes, devices, strict=True):
        for ax, pass_ in zip(row, passes, strict=True):
            d = lat[(lat["device"] == device) & (lat["pass"] == pass_)]
            for k, b in enumerate(batches):
                sel = d[d["batch"] == b]
                offset = (k - (len(batches) - 1) / 2) * 0.15
                ax.scatter(sel["speedup"], sel["shape"].map(position) + offset, color=colours[b],
                           s=22, label=f"measured, batch {b}")
            ax.scatter(ratios.reindex(list(labels)), range(len(labels)), marker="D", color="k",
                       s=22, label="MAC ratio", zorder=3)
            ax.axvline(9, ls=":", color="crimson")
            ax.axvline(1, ls="--", color="grey")
            ax.set_title(f"{DEVICES.get(device, device)}, {pass_}", fontsize=9)
            ax.set_xlim(0, right)
            ax.tick_params(labelsize=8)
            ax.set_xlabel("speedup of the separable form (×)", fontsize=9)
    axes[0, 0].set_yticks(range(len(labels)), list(labels.values()))
    axes[0, 0].set_ylim(len(labels) - 0.5, -0.5)  # first shape on top; shared by every panel
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False,
               handletextpad=0.2, columnspacing=1.0)
    fig.tight_layout(rect=(0, 0.06 / len(devices), 1, 1))
    return fig


def roofline(points: pd.DataFrame, ceilings: dict, titles: dict):
    """A roofline per device of `points` (`costs.roofline_points`: device, shape, form,
    intensity, gmacs): the roof min(peak, bandwidth x intensity) of `ceilings[device]`,
    its ridge (a circle, its value in the panel's title, so that no label covers a point),
    and each layer shape's standard and separable forms joined by a grey line. `titles`:
    device -> the first line of its panel's title."""
    from analysis.flops import attainable

    devices = sorted(points["device"].unique()) or ["cpu"]
    fig, axes = plt.subplots(1, len(devices), squeeze=False,
                             figsize=(COLUMN_INCHES if len(devices) > 1 else 5.0, 4.0))
    palette = dict(zip(("standard", "separable"), sns.color_palette("colorblind", 2),
                       strict=True))
    for ax, device in zip(axes[0], devices, strict=True):
        top, p = ceilings[device], points[points["device"] == device]
        xs = np.geomspace(min([*p["intensity"], top["ridge"]]) / 2,
                          max([*p["intensity"], top["ridge"]]) * 2, 200)
        ax.plot(xs, attainable(xs, top["peak_gmacs"], top["bandwidth_gbs"]), color="k", lw=1.5,
                label="roof (measured)")
        ax.scatter([top["ridge"]], [top["peak_gmacs"]], s=60, facecolors="none",
                   edgecolors="k", zorder=4, label="ridge (the roofs meet)")
        pairs = p.pivot(index="shape", columns="form", values=["intensity", "gmacs"]).dropna()
        for shape in pairs.index:
            ax.plot(pairs.loc[shape, "intensity"], pairs.loc[shape, "gmacs"], color="0.7",
                    lw=0.8, zorder=1)
        for form, colour in palette.items():
            q = p[p["form"] == form]
            ax.scatter(q["intensity"], q["gmacs"], color=colour, s=30, zorder=3,
                       label=f"{form} layers")
        ax.set(xscale="log", yscale="log")
        ax.set_xlabel("MACs per byte moved (at least)", fontsize=9)
        ax.set_ylabel("GMAC/s", fontsize=9)
        ax.set_title(f"{titles.get(device, device)}\nridge at {num(top['ridge'], 2)} MACs/byte",
                     fontsize=9)
        ax.tick_params(which="both", labelsize=8)
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, 2 and 5 between the powers of ten
            axis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(plt.FuncFormatter(
                lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def layer_shares(layers: pd.DataFrame):
    """tf-09's per-layer costs: the share of parameters (left) and of MACs (right) of each
    layer, one row of panels per model of `layers` (`flops.group_costs` by layer, with a
    `model` column), coloured by the resolution of the layer's output."""
    models = list(dict.fromkeys(layers["model"]))
    resolutions = sorted(layers["resolution"].unique(), key=lambda r: -int(r.split("x")[0]))
    palette = dict(zip(resolutions, sns.color_palette("viridis", len(resolutions)), strict=True))
    sizes = [layers["model"].eq(m).sum() for m in models]
    fig, axes = plt.subplots(len(models), 2, figsize=(COLUMN_INCHES, 1.2 + 0.3 * sum(sizes)),
                             sharex="col", squeeze=False, gridspec_kw={"height_ratios": sizes})
    for row, model in zip(axes, models, strict=True):
        d = layers[layers["model"] == model]
        for ax, col, name in zip(row, ("params_pct", "macs_pct"),
                                 ("% of parameters", "% of MACs"), strict=True):
            ax.barh(d["layer"], d[col], color=d["resolution"].map(palette))
            ax.set_ylim(len(d) - 0.5, -0.5)
            ax.tick_params(labelsize=8)
            if model == models[-1]:  # the columns share their x axis: name it once
                ax.set_xlabel(name, fontsize=9)
        row[0].set_ylabel(model, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in palette.values()]
    fig.legend(handles, [r.replace("x", "×") for r in palette], title="output resolution",
               loc="lower center", ncol=len(palette), fontsize=8, title_fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_size_inches()[1], 1, 1))  # 0.6 in: the legend
    return fig


# ---------------------------------------------------------------- tf-10's figures and tables

# One colour per network in every tf-10 figure.
MODEL_COLOURS = dict(zip(VALUE_NAMES["model"], sns.color_palette("colorblind", 6),
                         strict=True))


def _factor(log_ratio: float) -> str:
    """A difference of logarithms as the ratio it stands for: 0.693 -> '2×'."""
    return f"{num(math.exp(log_ratio))}×"


def tf10_degradation(found) -> str:
    """Each plain pair's final training loss difference, in plain words."""
    name = VALUE_NAMES["model"]
    return "; ".join(f"{name[d['deep']]} minus {name[d['shallow']]}, "
                     f"{judged(d['loss'], num)}" for d in found.degradation) or "not trained"


def tf10_matched(found) -> str:
    """Each ResNet/plain pair's sharpness ratios at their matched training loss."""
    name = VALUE_NAMES["model"]
    return "; ".join(f"{name[m['plain']]} over {name[m['resnet']]} at training loss "
                     f"{num(m['level'])}: scale-invariant {judged(m['invariant'], _factor)}, "
                     f"raw {judged(m['raw'], _factor)}" for m in found.matched) \
        or "no pair was trained"


def tf10_at_init(found) -> str:
    """Each pair's scale-invariant sharpness ratio at initialisation."""
    name = VALUE_NAMES["model"]
    return "; ".join(f"{name[a['plain']]} over {name[a['resnet']]}, "
                     f"{judged(a['invariant'], _factor)}" for a in found.at_init) \
        or "not measured"


def tf10_init_table(found) -> pd.DataFrame:
    """Untrained networks: mean raw and scale-invariant top eigenvalue, and the plain
    network's ratio to its ResNet twin."""
    name = VALUE_NAMES["model"]
    means = found.init.groupby("model")[["raw", "invariant"]].mean()
    ratio = {a["plain"]: interval(a["invariant"], _factor) for a in found.at_init}
    return pd.DataFrame([{"network": name[m], "raw": num(means.loc[m, "raw"]),
                          "scale-invariant": num(means.loc[m, "invariant"]),
                          "over its ResNet twin": ratio.get(m, "–")}
                         for m in name if m in means.index])


def sharpness_curves(sharpness: pd.DataFrame, levels: list[float]):
    """tf-10: the top eigenvalue of D H D (left) and of H (right) against the training loss
    at each kept epoch, one line per network and seed; dotted: the matched loss levels."""
    import matplotlib.ticker as mticker

    first = sharpness["seed"].min()
    fig, axes = plt.subplots(1, 2, figsize=(6.3, 3.4), sharex=True)
    for ax, kind in zip(axes, ("invariant", "raw"), strict=True):
        for (m, seed), run in sharpness.groupby(["model", "seed"]):
            run = run.sort_values("epoch")
            ax.plot(run["loss"], run[kind], marker="o", ms=3, color=MODEL_COLOURS[m],
                    ls="-" if seed == first else "--",
                    label=f"{VALUE_NAMES['model'][m]}, seed {seed}")
        for level in levels:
            ax.axvline(level, color="grey", ls=":")
        ax.set(xscale="log", yscale="log", xlabel="training loss",
               ylabel="top eigenvalue, " + ("scale-invariant" if kind == "invariant" else "raw"))
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(mticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    axes[0].invert_xaxis()  # shared: training goes left to right in both panels
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def landscape_slices(slices: pd.DataFrame):
    """tf-10: loss (log) and accuracy along one filter-normalised direction, first seed."""
    s = slices[slices["seed"] == slices["seed"].min()]
    s = readable(s.assign(acc=100 * s["acc"]), ["model"])
    palette = {VALUE_NAMES["model"][m]: MODEL_COLOURS[m] for m in set(slices["model"])}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.3, 2.8))
    for axis, y in ((ax, "loss"), (bx, "acc")):
        sns.lineplot(data=s, x="alpha", y=y, hue="model", hue_order=sorted(palette),
                     marker="o", markersize=3, palette=palette, ax=axis, legend=axis is ax)
    ax.set(yscale="log", xlabel="α", ylabel="training loss")
    bx.set(xlabel="α", ylabel="training accuracy (%)")
    ax.legend(fontsize=8, title="")
    fig.tight_layout()
    return fig


def landscape_surfaces(surfaces: pd.DataFrame):
    """tf-10: the loss on a plane of two filter-normalised directions per network (first
    seed), with shared log-spaced contour levels."""
    surfaces = surfaces[surfaces["seed"] == surfaces["seed"].min()]
    shown = [m for m in VALUE_NAMES["model"] if m in set(surfaces["model"])]
    levels = np.geomspace(surfaces["loss"].min(), min(surfaces["loss"].max(), 50), 14)
    fig, axes = plt.subplots(1, len(shown), figsize=(6.2, 6.0 / len(shown) + 0.6),
                             squeeze=False, layout="constrained")
    for ax, m in zip(axes[0], shown, strict=True):
        grid = surfaces[surfaces["model"] == m].pivot(index="beta", columns="alpha",
                                                      values="loss")
        cs = ax.contourf(grid.columns, grid.index, grid.clip(upper=levels[-1]).values,
                         levels=levels, cmap="viridis",
                         norm=plt.matplotlib.colors.LogNorm(levels[0], levels[-1]))
        ax.plot(0, 0, "w+", ms=8)
        ax.set_title(VALUE_NAMES["model"][m], fontsize=9)
        ax.set(xlabel="α", ylabel="β" if m == shown[0] else "")
        ax.set_aspect("equal")
    ticks = [v for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if levels[0] <= v <= levels[-1]]
    fig.colorbar(cs, ax=axes[0].tolist(), shrink=0.8, label="training loss").set_ticks(
        ticks, labels=[f"{v:g}" for v in ticks])
    return fig
