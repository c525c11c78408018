"""Figures and tables speak the reader's language: one mapping of parameter names and values."""
import matplotlib

matplotlib.use("Agg")

import io  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from analysis import plots  # noqa: E402


def test_parameter_values_and_names_read_as_words():
    frame = pd.DataFrame({"batch_norm": [True, False], "init": ["kaiming_normal", "default"],
                          "lr": [0.1, 0.01]})
    shown = plots.readable(frame)
    assert shown["batch_norm"].tolist() == ["with BN", "without BN"]
    assert shown["init"].tolist() == ["Kaiming normal", "PyTorch's default"]
    assert shown["lr"].tolist() == [0.1, 0.01]  # no mapping: unchanged
    assert plots.label("weight_decay") == "weight decay" and plots.label("some_key") == "some key"
    text = plots.table(frame).data
    assert "| batch norm" in text and "with BN" in text and "learning rate" in text


def long_metrics(hue_values, first_loss=2.3):
    rows = []
    for value in hue_values:
        for epoch in range(1, 5):
            loss = first_loss if epoch == 1 else 1.0 / epoch
            for split in ("train", "val"):
                rows += [{"epoch": epoch, "split": split, "metric": "loss", "value": loss,
                          "batch_norm": value},
                         {"epoch": epoch, "split": split, "metric": "acc", "value": 0.5,
                          "batch_norm": value}]
    return pd.DataFrame(rows)


def test_curves_show_percent_and_readable_legends():
    fig = plots.curves(long_metrics([True, False]), hue="batch_norm")
    loss_ax, acc_ax = fig.axes[:2]
    assert acc_ax.get_ylabel() == "accuracy (%)"
    assert np.allclose(acc_ax.lines[0].get_ydata(), 50)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "batch norm" in legend and "with BN" in legend and "validation" in legend


def test_a_first_epoch_spike_is_cut_from_the_loss_axis_and_said():
    fig = plots.curves(long_metrics([True], first_loss=50.0), hue="batch_norm")
    loss_ax = fig.axes[0]
    assert loss_ax.get_ylim()[1] <= 2 * 0.5 + 1e-9  # twice the largest loss after epoch 1
    assert "axis cut" in loss_ax.get_ylabel()
    calm = plots.curves(long_metrics([True], first_loss=0.9), hue="batch_norm")
    assert "axis cut" not in calm.axes[0].get_ylabel()


def test_confusion_heatmap_shows_row_percentages():
    table = pd.DataFrame([[3, 1], [0, 4]], index=["a", "b"], columns=["a", "b"])
    fig = plots.confusion_heatmap(table)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["75", "25", "0", "100"]


def test_tables_for_the_book_are_markdown_without_index():
    runs = pd.DataFrame({"lr": [0.001, 0.01, 1.0], "best_val_acc": [62.3, 61.0, float("nan")],
                         "status": ["finished", "a|b", None], "seed": [0, 1, 2]})
    assert plots.table(runs).data.splitlines() == [
        "| learning rate | best val acc | status   | seed |",
        "|--------------:|-------------:|----------|-----:|",
        "| 0.001         | 62.3         | finished | 0    |",
        "| 0.010         | 61.0         | a\\|b     | 1    |",
        "| 1.000         | –            | –        | 2    |"]
    counts = pd.DataFrame({"train": [5000]}, index=["cat"]).rename_axis("class")
    assert plots.table(counts).data.splitlines()[2] == "| cat   | 5000  |"
    shape = pd.DataFrame({"layer": ["16->16 s1 @32x32"], "decay": [5e-4]})
    assert plots.table(shape).data.splitlines()[2] == "| 16-\\>16 s1 \\@32x32 | 0.0005 |"


def test_curves_fit_the_column():
    long = pd.DataFrame([{"epoch": e, "split": s, "metric": m, "value": 0.5, "init": i}
                         for e in (1, 2) for s in ("train", "val") for m in ("loss", "acc")
                         for i in ("default", "kaiming_normal", "xavier_normal")])
    fig = plots.curves(long, hue="init")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")  # as notebooks show it
    plt.close(fig)
    assert Image.open(buffer).size[0] / 96 <= plots.COLUMN_INCHES


def test_sweep_marks_failed_runs_instead_of_dropping_them():
    runs = pd.DataFrame({"lr": [0.01, 0.1, 1.0, 3.0], "acc": [0.5, 0.6, 0.1, float("nan")],
                         "status": ["finished", "finished", "collapsed", "diverged"]})
    fig = plots.sweep(runs, x="lr", y="acc", logx=True)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "collapsed" in labels and "diverged" in labels
    marked = {c.get_label(): c.get_offsets().data.tolist() for c in ax.collections}
    assert marked["collapsed"] == [[1.0, 10.0]]  # at its accuracy, in percent
    assert marked["diverged"][0][0] == 3.0  # on the axis: it has no accuracy
    plt.close(fig)


@pytest.mark.parametrize("x, text", [
    (0.0123456, "0.0123"), (45.64, "45.6"), (0.5, "0.5"), (1.0, "1"), (100, "100"),
    (12345, "12,300"), (999.7, "1,000"), (5e-4, "5e-4"), (1.5e-5, "1.5e-5"),
    (3.430623e15, "3.43e15"), (9.9996e-5, "1e-4"), (0, "0"), (-0.25, "-0.25"),
])
def test_prose_numbers_are_plain(x, text):
    assert plots.num(x) == text


@pytest.mark.parametrize("x, text", [
    (0.036, "3.6 points"), (0.01, "1.0 point"), (-0.012, "-1.2 points"), (0.0004, "0.0 points"),
])
def test_accuracy_differences_read_as_points(x, text):
    assert plots.pts(x) == text


def test_counts_agree_with_their_number():
    assert [plots.count(1, "seed"), plots.count(3, "seed"), plots.count(0, "run")] == [
        "1 seed", "3 seeds", "0 runs"]


def test_tables_for_reading_show_accuracies_in_percent_under_readable_names():
    table = plots.percent(pd.DataFrame({"lr": [0.1], "best_val_acc": [0.6234], "gap": [0.0123],
                                        "seed": [0]}))
    assert table.to_dict("records") == [{"learning rate": 0.1, "best val acc": 62.3,
                                         "gap (points)": 1.2, "seed": 0}]


def test_tables_never_show_minus_zero_and_percent_keeps_readable_values():
    from analysis import plots

    text = plots.table(pd.DataFrame({"x": [-0.00004, 0.5]}).round(3)).data
    assert "-0" not in text and text.splitlines()[2].startswith("| 0.0 ")
    shown = plots.percent(pd.DataFrame({"batch_norm": [True, False],
                                        "final_val_acc": [-1e-6, 0.5]}))
    assert list(shown["batch norm"]) == ["with BN", "without BN"]
    assert "-0" not in plots.table(shown).data


def test_judged_names_every_verdict_and_equivalence_within_a_margin():
    from analysis.results import Difference, Verdict

    def d(diff, low, high, verdict):
        return Difference(diff, low, high, 5, True, verdict)

    assert plots.judged(d(0.03, 0.02, 0.04, Verdict.HIGHER)).endswith(", beyond noise")
    assert plots.judged(d(0.03, 0.02, 0.04, Verdict.HIGHER), margin=0.01).endswith(
        ", beyond noise")  # beyond the margin too
    assert plots.judged(d(-0.004, -0.007, -0.001, Verdict.LOWER), margin=0.01).endswith(
        "beyond noise but within ±1.0 point: equivalent")
    assert plots.judged(d(0.001, -0.005, 0.007, Verdict.WITHIN), margin=0.01).endswith(
        "within ±1.0 point: equivalent")
    assert plots.judged(d(0.001, -0.02, 0.02, Verdict.WITHIN), margin=0.01).endswith(
        "within noise but wider than ±1.0 point: inconclusive")
    assert plots.judged(d(0.001, -0.02, 0.02, Verdict.WITHIN)).endswith(", within noise")
    nan = float("nan")
    assert "noise" not in plots.judged(d(0.01, nan, nan, Verdict.UNJUDGED), margin=0.01)


def test_dead_units_per_rate_read_as_words_and_say_where_none_were_measured():
    index = pd.MultiIndex.from_product([[0.01, 0.3], ["leaky_relu", "relu"]],
                                       names=["lr", "activation"])
    table = pd.DataFrame({"dead": [0.01, 0.02, float("nan"), 0.78]}, index=index)
    assert plots.dead_by_rate(table) == "lr 0.01: 2% against 1%; lr 0.3: 78% against none measured"
