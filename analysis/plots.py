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
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        if metric == "loss":
            _clip_first_epoch_spike(ax, long[long["metric"] == "loss"])
    fit_to_column(g)
    return g.figure


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
    if flagged or hue:
        ax.legend()
    if logx:
        ax.set_xscale("log")
    ax.set_ylabel(ylabel or y)
    ax.set_xlabel(label(x))
    return ax.figure


def confusion_heatmap(table: pd.DataFrame, ax=None):
    """A confusion matrix (`results.confusion`) as row percentages: each row, a true class,
    sums to 100; the diagonal is the per-class accuracy."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 4.6))
    share = 100 * table.div(table.sum(axis=1), axis=0)
    sns.heatmap(share, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, square=True,
                cbar_kws={"label": "% of the true class"}, annot_kws={"size": 7}, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return ax.figure


def image_grid(images, titles: list[str], columns: int = 8, size: float = 0.78):
    """uint8 images (N, 3, H, W) in a grid, one small title each."""
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + 0.32)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(np.asarray(image).transpose(1, 2, 0))
        ax.set_title(title, fontsize=6.5, pad=2)
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
    out = table.copy()
    for col in out.columns:
        if str(col).endswith(ACCURACY_COLUMNS) and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = (100 * out[col]).round(digits)
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
        low, high = (round(100 * v, 1) + 0.0 for v in (d.low, d.high))
        return f"{pts(d.diff)} (95% CI {low:.1f} to {high:.1f})"
    return f"{unit(d.diff)} (95% CI {unit(d.low)} to {unit(d.high)})"


def judged(d, unit=pts, margin: float | None = None) -> str:
    """`interval` with its verdict: '3.2 points (95% CI 2.1 to 4.3), beyond noise'; 'within
    noise' where the interval contains zero, and with a `margin`, whether the whole interval
    lies inside it (equivalent) or not (inconclusive); no verdict without an interval."""
    if d.verdict is Verdict.UNJUDGED:
        return interval(d, unit)
    if d.verdict is not Verdict.WITHIN:
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
