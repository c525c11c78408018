"""The two cost findings of Part 1 on made-up tables: tf-08's rule and what its section
quotes from a latency run (flagged timings left out, partial sets giving no all-layers
figure, the roofline, the network predicted from its layers), tf-09's rule, and the
figures they draw."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis import plots  # noqa: E402
from analysis.findings import costs  # noqa: E402

A, B = "16->16 s1 @32x32", "16->32 s2 @16x16"  # two layer shapes, 3 and 1 convs


def layers() -> pd.DataFrame:
    """A made-up `flops.separable_table` of two layer shapes."""
    out = pd.DataFrame({
        "shape": [A, B], "count": [3, 1], "cout": [16, 32],
        "macs_standard": [900, 600], "macs_separable": [150, 100],
        "params_standard": [2304, 4608], "params_separable": [400, 656],
        "intensity_standard": [10.0, 20.0], "intensity_separable": [1.0, 4.0],
        "intensity_depthwise": [0.5, 0.5]})
    return out.assign(mac_ratio=out["macs_standard"] / out["macs_separable"],
                      formula=out["cout"].map(lambda n: 1 / (1 / n + 1 / 9)))


def latency(rows, device="cpu") -> pd.DataFrame:
    """A made-up `flops.latency_table`: rows of (pass, batch, shape, standard_s, separable_s,
    flag); shape 'resnet20' is the whole network. Static columns come from `layers()`."""
    static = layers().set_index("shape")
    out = []
    for pass_, batch, shape, std, sep, flag in rows:
        network = shape == "resnet20"
        s = None if network else static.loc[shape]
        out.append({
            "device": device, "threads": 1, "batch": batch,
            "scope": "network" if network else "layer", "shape": shape,
            "count": 1 if network else int(s["count"]), "pass": pass_,
            "macs_standard": 4000 if network else s["macs_standard"],
            "macs_separable": 1000 if network else s["macs_separable"],
            "mac_ratio": 4.0 if network else s["mac_ratio"],
            "intensity_standard": 8.0 if network else s["intensity_standard"],
            "intensity_separable": 2.0 if network else s["intensity_separable"],
            "standard_s": std, "separable_s": sep, "speedup": std / sep, "flag": flag})
    return pd.DataFrame(out)


CEILINGS = {"cpu": {"peak_gmacs": 100.0, "bandwidth_gbs": 20.0, "ridge": 5.0,
                    "matmul_size": 256, "copy_bytes": 2**20}}
HARDWARE = {"cpu": "a made-up CPU", "torch": "2.x", "gpu": None}


def finding(rows, batch=32) -> costs.TF08:
    return costs.tf08_from(latency(rows), layers(), CEILINGS, HARDWARE, 0.1, 2, batch)


def both(batch, speed_a, speed_b, pass_="forward", flag_a="", flag_b=""):
    """Both layer shapes at one batch and pass, the standard form taking 1 s."""
    return [(pass_, batch, A, 1.0, 1.0 / speed_a, flag_a),
            (pass_, batch, B, 1.0, 1.0 / speed_b, flag_b)]


# ---------------------------------------------------------------- tf-08's rule

def test_tf08_true_when_all_layers_together_reach_8x():
    assert costs.tf08_verdict(latency(both(32, 8.5, 9.0)), [A, B]) is True


def test_tf08_false_when_the_most_favourable_measurement_falls_short():
    rows = both(1, 1.2, 0.8) + both(32, 2.0, 3.0) + both(32, 2.5, 3.5, "forward+backward")
    assert costs.tf08_verdict(latency(rows), [A, B]) is False


def test_tf08_reads_all_layers_together_not_one_fast_layer():
    # B alone reaches 9x, but all four convs together (3 of A at 1x) do not.
    rows = both(32, 1.0, 9.0)
    assert costs.most_favourable(latency(rows), [A, B])["scope"] == costs.ALL_LAYERS
    assert costs.tf08_verdict(latency(rows), [A, B]) is False


def test_tf08_falls_back_to_the_best_single_layer_without_a_complete_set():
    flagged = "separable spread 30.0% > 10%"
    fast = both(32, 9.0, 1.0, flag_b=flagged)  # B flagged: no all-layers figure
    assert costs.tf08_verdict(latency(fast), [A, B]) is True
    assert costs.tf08_verdict(latency(both(32, 3.0, 1.0, flag_b=flagged)), [A, B]) is False


def test_tf08_leaves_flagged_timings_out():
    rows = both(32, 2.0, 2.0) + both(128, 20.0, 20.0, flag_a="standard spread 50.0% > 10%")
    assert costs.tf08_verdict(latency(rows), [A, B]) is False
    assert finding(rows).best["speedup"] == pytest.approx(2.0)


def test_tf08_undecided_when_no_layer_timing_passed():
    flag = "standard forward+backward faster than forward"
    rows = both(32, 9.0, 9.0, flag_a=flag, flag_b=flag) + [("forward", 32, "resnet20", 1.0, 0.1,
                                                            "")]
    found = finding(rows)
    assert costs.tf08_verdict(latency(rows), [A, B]) is None and found.verdict is None
    assert found.best_where == "no layer timing passed the checks"
    assert "best measured speedup none" in found.key


# ---------------------------------------------------------------- what the section quotes

def test_all_layers_weights_each_shape_by_its_count():
    rows = both(32, 2.0, 4.0)  # A: 1 s against 0.5 s, three times; B: 1 s against 0.25 s
    overall = costs.all_layers(latency(rows), [A, B])
    assert len(overall) == 1
    assert overall.iloc[0]["speedup"] == pytest.approx((3 * 1 + 1) / (3 * 0.5 + 0.25))


def test_a_partial_set_of_layer_timings_gives_no_all_layers_figure():
    rows = (both(32, 2.0, 4.0) + both(32, 3.0, 5.0, "forward+backward",
                                      flag_b="separable spread 20.0% > 10%"))
    found = finding(rows)
    assert list(found.overall["pass"]) == ["forward"]
    forward, step = found.speedups("forward"), found.speedups("forward+backward")
    assert forward[costs.ALL_LAYERS] == pytest.approx(4 / 1.75)
    assert math.isnan(step[costs.ALL_LAYERS]) and math.isnan(step[B])  # flagged: no number
    assert step[A] == pytest.approx(3.0)
    assert math.isnan(found.by_layer.loc[costs.ALL_LAYERS, "forward+backward"])
    assert found.by_layer.loc[costs.ALL_LAYERS, "count"] == 4


def test_flagged_measurements_are_counted_by_reason():
    rows = (both(32, 2.0, 2.0, flag_a="standard forward+backward faster than forward; "
                 "standard spread 12.0% > 10%")
            + both(32, 2.0, 2.0, "forward+backward", flag_b="separable spread 11.0% > 10%"))
    found = finding(rows)
    assert len(found.flagged) == 2 and len(found.sane) == 2
    assert found.flagged_for("faster than forward") == 1 and found.flagged_for("spread") == 2
    assert found.short_share == 1.0  # both sane ones at 2x, under their ratios of 6x


def test_the_reference_batch_is_32_when_measured():
    assert costs.reference_batch([1, 32, 128]) == 32
    assert costs.reference_batch([4]) == 4 and costs.reference_batch([1, 8]) == 8


def test_the_best_measurement_is_said_in_words():
    rows = both(1, 1.5, 1.5) + both(32, 2.0, 2.0, "forward+backward")
    assert finding(rows).best_where == ("all 4 layers together, forward+backward at batch "
                                        "size 32 on the CPU")
    alone = both(32, 3.0, 1.0, flag_b="separable spread 20.0% > 10%")
    assert finding(alone).best_where == ("the layer shape 16→16, stride 1, 32×32 alone, "
                                         "forward at batch size 32 on the CPU")


def test_the_network_is_predicted_from_its_convolutions():
    # The standard network takes 10 s, its convs 3 x 1 + 1 = 4 s of it; separable convs
    # take 3 x 0.5 + 0.5 = 2 s, so the separable network should take 10 - 4 + 2 = 8 s.
    rows = both(32, 2.0, 2.0) + [("forward", 32, "resnet20", 10.0, 9.0, "")]
    r = finding(rows).reconciled.iloc[0]
    assert r["share"] == pytest.approx(0.4)
    assert r["predicted"] == pytest.approx(10 / 8) and r["measured"] == pytest.approx(10 / 9)
    assert r["gap"] == pytest.approx((10 / 9) / (10 / 8) - 1)
    # No network timing, or a flagged one: nothing to set side by side.
    assert finding(both(32, 2.0, 2.0)).reconciled.empty
    flagged = [("forward", 32, "resnet20", 10.0, 9.0, "standard spread 20.0% > 10%")]
    assert finding(both(32, 2.0, 2.0) + flagged).reconciled.empty


def test_the_roofline_and_the_speedup_at_the_roof():
    # A: 32 images x 900 MACs in 1 µs = 28.8 GMAC/s; intensity 10 -> a roof of 100.
    rows = both(32, 2.0, 2.0) + both(32, 2.0, 2.0, "forward+backward")
    rows = [(p, b, s, std / 1e6, sep / 1e6, f) for p, b, s, std, sep, f in rows]
    found = finding(rows)
    points = found.points.set_index(["shape", "form"])
    assert len(points) == 4  # forward only, both forms of both shapes
    assert points.loc[(A, "standard"), "gmacs"] == pytest.approx(28.8)
    assert points.loc[(A, "standard"), "of_roof"] == pytest.approx(0.288)
    # Separable A: 32 x 150 MACs in 0.5 µs = 9.6 GMAC/s against a roof of 20 x 1.0.
    assert points.loc[(A, "separable"), "of_roof"] == pytest.approx(0.48)
    assert found.above_roof() == 0
    # Both separable pairs (intensity 1 and 4) lie left of the ridge at 5.
    assert found.left_of_ridge == 2
    # At the roof A's pair runs at 20 GMAC/s against 100: speedup 6 x 20/100 = 1.2, not 6;
    # B's at 80 against 100: 4.8. The roof takes speed from both.
    lay = found.layers.set_index("shape")
    assert lay.loc[A, "roof_speedup"] == pytest.approx(1.2)
    assert lay.loc[B, "roof_speedup"] == pytest.approx(4.8)
    assert found.capped == 2
    # Bytes: A's pair moves 150 / 1 against 900 / 10, 1.67 times as many.
    assert lay.loc[A, "bytes_ratio"] == pytest.approx(150 / 90)
    roomy = dict(CEILINGS, cpu={**CEILINGS["cpu"], "bandwidth_gbs": 1000.0, "ridge": 0.1})
    found = costs.tf08_from(latency(rows), layers(), roomy, HARDWARE, 0.1, 2, 32)
    assert found.capped == 0 and found.left_of_ridge == 0  # compute-bound: MACs decide


def test_layer_shapes_read_as_words():
    assert costs.layer_label("16->32 s2 @16x16") == "16→32, stride 2, 16×16"
    assert costs.layer_label("resnet20") == "resnet20"


# ---------------------------------------------------------------- tf-09's rule

def stages(late_macs: int) -> pd.DataFrame:
    """A made-up SqueezeNet stage table: 100 MACs in all, `late_macs` on late maps."""
    early = 100 - late_macs
    return pd.DataFrame({"resolution": ["109x109", "54x54", "27x27", "13x13", "1x1"],
                         "macs": [early // 2, early - early // 2, late_macs - 1, 1, 0]})


def variants(early_params: int) -> pd.DataFrame:
    return pd.DataFrame({"variant": [costs.SQUEEZENET, costs.EARLY, costs.ALEXNET],
                         "params": [1000, early_params, 50_000],
                         "macs": [800, 400, 700]}).set_index("variant")


def test_tf09_true_only_when_compute_is_late_and_placement_saves_parameters():
    assert costs.late_share(stages(60)) == pytest.approx(0.6)
    assert costs.tf09_verdict(stages(60), variants(early_params=1500)) is True
    # Moving the pools early leaves the parameters as they are: the "therefore" fails.
    assert costs.tf09_verdict(stages(60), variants(early_params=1000)) is False
    # Most compute early: the first half fails.
    assert costs.tf09_verdict(stages(40), variants(early_params=1500)) is False
    assert costs.tf09_verdict(stages(50), variants(early_params=1500)) is False  # "more than"


def test_tf09_on_the_real_networks_gives_the_recorded_verdict():
    found = costs.tf_09()
    assert found.verdict is False  # book/answers.yml records False
    assert found.early_params_same and found.late_share > costs.LATE
    assert found.top_stage == "27x27"
    assert found.share(costs.ALEXNET, ["fc6", "fc7", "fc8"]) > 0.9
    assert found.ratio(costs.EARLY, "macs") < 1


# ---------------------------------------------------------------- wording and figures

def test_missing_values_read_as_words_and_spans_skip_them():
    assert plots.maybe(float("nan"), costs.speed, "flagged") == "flagged"
    assert plots.maybe(None) == "none" and plots.maybe(1.234, costs.speed) == "1.23×"
    assert plots.span([2.0, float("nan"), 1.0], costs.speed) == "1.00× to 2.00×"
    assert plots.span([1.001, 0.999], costs.speed) == "1.00×"
    assert plots.span([float("nan")], costs.speed, "flagged") == "flagged"
    assert plots.millions(819_093_576) == "819.1M"


def smallest_font(fig) -> float:
    fig.canvas.draw()
    return min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
               if t.get_text() and t.get_visible())


def test_the_figures_fit_the_column_with_readable_text():
    rows = both(32, 2.0, 2.0) + both(1, 1.5, 1.2) + both(32, 2.0, 2.0, "forward+backward")
    found = finding(rows)
    labels = {A: "16→16 (×3)", B: "16→32 (×1)", "resnet20": "whole ResNet-20"}
    ratios = found.measured.drop_duplicates("shape").set_index("shape")["mac_ratio"]
    figures = [plots.separable_speedups(found.sane, ratios, labels),
               plots.roofline(found.points, CEILINGS, {"cpu": "CPU"}),
               plots.layer_shares(pd.DataFrame({
                   "model": ["one", "one", "two"], "layer": ["conv1", "fc", "conv1"],
                   "resolution": ["8x8", "1x1", "8x8"], "params_pct": [10.0, 90.0, 100.0],
                   "macs_pct": [80.0, 20.0, 100.0]}))]
    for fig in figures:
        assert fig.get_size_inches()[0] <= plots.COLUMN_INCHES
        assert smallest_font(fig) >= 8
        plt.close(fig)
    # The ridge's value is in the panel's title, never written among the points.
    assert figures[1].axes[0].get_title() == "CPU\nridge at 5 MACs/byte"
    assert not figures[1].axes[0].texts


def test_costs_appendix_lists_every_book_model_with_agreeing_counters():
    models, stages = costs.book_models()
    assert list(models["model"]) == [title for title, *_ in costs.BOOK_MODELS]
    by_title = models.set_index("model")
    assert by_title.loc["LeNet-5", "params"] == 62_006
    assert by_title.loc["LeNet-5", "macs"] == 651_720  # conv, pool-free layers and fcs
    # PyTorch's counter sees the same convolutions and matrix products as fvcore.
    assert (models["conv_linear_flops"] == models["torch_flops"]).all()
    # Batch norm is counted by fvcore, ReLU is not: it shows among the zero ops.
    assert "relu" in by_title.loc["LeNet-5", "zero"]
    assert set(stages) == set(models["model"])
    for title, table in stages.items():
        assert table["params"].sum() == by_title.loc[title, "params"], title
