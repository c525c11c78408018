"""Figures and tables speak the reader's language: one mapping of parameter names and values."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

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
