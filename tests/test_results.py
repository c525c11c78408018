"""The noise judgement the chapters rest on, on made-up numbers with known answers."""
import math

import pandas as pd
import pytest

from analysis import results


def runs(values_a, values_b, seeds_a=None, seeds_b=None):
    seeds_a = seeds_a or list(range(len(values_a)))
    seeds_b = seeds_b or list(range(len(values_b)))
    return pd.DataFrame({"setting": ["a"] * len(values_a) + ["b"] * len(values_b),
                         "seed": seeds_a + seeds_b, "acc": values_a + values_b})


def test_paired_differences_cancel_what_the_seed_decides():
    # Seeds move both settings alike (0.5, 0.6, 0.7); a is always about 0.01 better.
    d = results.difference(runs([0.511, 0.61, 0.709], [0.50, 0.60, 0.70]), "setting", "a",
                           "b", "acc")
    assert d.paired and d.n == 3 and d.verdict is results.Verdict.HIGHER
    assert d.diff == pytest.approx(0.01) and d.low > 0.007


def test_differences_without_any_spread_are_not_judged():
    # Zero events in every run (loss spikes, say): no noise to judge a difference against.
    d = results.difference(runs([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), "setting", "a", "b", "acc")
    assert d.verdict is results.Verdict.UNJUDGED and d.diff == 0 and math.isnan(d.low)
    # Independent samples without spread either.
    d = results.difference(runs([1.0, 1.0], [0.0, 0.0], [0, 1], [2, 3]), "setting", "a", "b",
                           "acc")
    assert d.verdict is results.Verdict.UNJUDGED and d.diff == 1


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    tight = results.difference(runs([0.501, 0.602, 0.699], [0.50, 0.60, 0.70]), "setting", "a",
                               "b", "acc")
    wide = results.difference(runs([0.52, 0.58, 0.71], [0.50, 0.60, 0.70]), "setting", "a",
                              "b", "acc")
    assert tight.verdict is wide.verdict is results.Verdict.WITHIN
    assert tight.equivalent(0.01) and not wide.equivalent(0.01)  # inconclusive, not equal
    assert not results.difference(runs([0.6], [0.6]), "setting", "a", "b", "acc").equivalent(1)


def test_phrase_picks_the_words_of_the_verdict():
    words = {"higher": "up", "lower": "down", "within": "unclear", "unjudged": "untested"}
    for values, expected in (([0.61, 0.7, 0.81], "up"), ([0.39, 0.5, 0.61], "down"),
                             ([0.55, 0.6, 0.75], "unclear"), ([0.6], "untested")):
        d = results.difference(runs(values, [0.5, 0.6, 0.7][:len(values)]), "setting", "a",
                               "b", "acc")
        assert results.phrase(d, **words) == expected


def test_bounded_intervals_stay_between_0_and_1():
    df = pd.DataFrame({"g": ["x"] * 3, "acc": [0.99, 0.90, 0.97]})
    plain = results.mean_ci(df, "g", "acc").iloc[0]
    bounded = results.mean_ci(df, "g", "acc", bounded=True).iloc[0]
    assert plain["ci_high"] > 1  # the t-interval of three runs near 95% reaches past 100%
    assert 0 < bounded["ci_low"] < bounded["mean"] < bounded["ci_high"] < 1
    assert bounded["mean"] == pytest.approx(plain["mean"])


def test_final_accuracy_averages_the_last_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "val_acc": [0.1, 0.5, 0.6, 0.7, 0.5]}).to_csv(path)
    assert results.final_accuracy(path, "finished") == pytest.approx(0.6)
    assert math.isnan(results.final_accuracy(path, "diverged"))
    pd.DataFrame({"epoch": [1], "val_acc": [0.3]}).to_csv(path)  # fewer epochs: all of them
    assert results.final_accuracy(path, "finished") == pytest.approx(0.3)


def test_interval_is_student_t_over_the_paired_differences():
    # Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2 dof) = 4.3027 -> 2 +- 2.4842.
    d = results.difference(runs([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]), "setting", "a", "b", "acc")
    half = 4.302653 / math.sqrt(3)
    assert (d.low, d.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert d.verdict is results.Verdict.WITHIN


def test_b_above_a_reads_lower():
    d = results.difference(runs([0.50, 0.60, 0.70], [0.52, 0.621, 0.719]), "setting", "a", "b",
                           "acc")
    assert d.verdict is results.Verdict.LOWER and d.diff == pytest.approx(-0.02)


def test_without_shared_seeds_welch_is_used():
    # Two independent samples with known Welch interval: means 1 and 0, variances 1 and 1,
    # n = 3 each -> se sqrt(2/3), dof 4, t(0.975, 4) = 2.7764.
    d = results.difference(runs([0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [0, 1, 2], [3, 4, 5]),
                           "setting", "a", "b", "acc")
    assert not d.paired
    assert d.high - d.diff == pytest.approx(2.776445 * math.sqrt(2 / 3), rel=1e-5)


def test_a_single_seed_is_not_judged():
    d = results.difference(runs([0.6], [0.5]), "setting", "a", "b", "acc")
    assert d.verdict is results.Verdict.UNJUDGED and math.isnan(d.low)
    assert d.diff == pytest.approx(0.1)


def test_missing_values_are_left_out_of_the_pairs():
    # A diverged run has no accuracy: seed 2 drops out, the other two pairs remain.
    d = results.difference(runs([0.612, 0.71, None], [0.60, 0.70, 0.80]), "setting", "a", "b",
                           "acc")
    assert d.n == 2 and d.diff == pytest.approx(0.011)


def test_differences_compares_every_setting_with_the_reference():
    df = pd.concat([runs([0.511, 0.61, 0.709], [0.50, 0.60, 0.70]),
                    pd.DataFrame({"setting": ["c"] * 3, "seed": [0, 1, 2],
                                  "acc": [0.40, 0.51, 0.60]})])
    table = results.differences(df, "setting", "b", "acc").set_index("setting")
    assert list(table.index) == ["a", "c"]
    assert table.loc["a", "verdict"] is results.Verdict.HIGHER
    assert table.loc["c", "verdict"] is results.Verdict.LOWER


def test_confusion_and_per_class_accuracy_on_known_predictions():
    pred = pd.DataFrame({"label": [0, 0, 1, 1, 2], "predicted": [0, 1, 1, 1, 0]})
    table = results.confusion(pred, ["cat", "dog", "fox"])
    assert table.loc["cat"].tolist() == [1, 1, 0] and table.loc["dog"].tolist() == [0, 2, 0]
    assert table.loc["fox"].tolist() == [1, 0, 0] and int(table.to_numpy().sum()) == 5
    acc = results.per_class_accuracy(pred, ["cat", "dog", "fox"])
    assert acc.to_dict() == {"cat": 0.5, "dog": 1.0, "fox": 0.0}


def test_predictions_come_from_the_saved_weights(fake_data, tmp_path):
    import torch

    from analysis import models
    from analysis.data import normalize

    torch.manual_seed(0)
    model = models.build_model("lenet5").eval()
    (tmp_path / "runs" / "k").mkdir(parents=True)
    torch.save(model.state_dict(), tmp_path / "runs" / "k" / "weights.pt")
    run = {"key": "k", "model": "lenet5", "activation": "relu", "batch_norm": False,
           "dropout": 0.0, "init": "default"}
    pred = results.predictions(run, fake_data, "val", results=tmp_path)
    with torch.no_grad():
        expected = model(normalize(fake_data.val_x, fake_data.mean, fake_data.std)).argmax(1)
    assert pred["predicted"].tolist() == expected.tolist()
    assert pred["label"].tolist() == fake_data.val_y.tolist()


@pytest.mark.parametrize("flags, start", [
    ([True, True], "The runs read the official"), ([False], "The runs read a copy"),
    ([True, None], "Not every run recorded"), ([True, False], "Some runs read"),
])
def test_data_note_names_which_files_the_runs_read(flags, start):
    assert results.data_note(pd.Series(flags, dtype=object)).startswith(start)
