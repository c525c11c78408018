"""tf-10's finding on made-up runs: the rule (history decides: False, or undecided when the
runs trained too briefly) and the numbers the section quotes."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.findings import MIN_EPOCHS_TO_JUDGE, claims
from analysis.results import Verdict

EPOCHS = [1, 2, 3, 4, 5]


def curves(losses: dict, epochs=EPOCHS) -> pd.DataFrame:
    """resnet-pair metrics: model -> final training loss; every run's loss falls to it, and
    seed 1 ends 0.01 above seed 0."""
    rows = [{"model": m, "seed": s, "epoch": e,
             "clean_train_loss": final + 0.01 * s + (epochs[-1] - e) * 0.2}
            for m, final in losses.items() for s in (0, 1) for e in epochs]
    return pd.DataFrame(rows)


def sharpness(invariant: dict, raw: dict) -> pd.DataFrame:
    """landscape checkpoints 0-5 of ResNet-20 (loss 2.4 down to 0.4) and plain-20 (down to
    0.8); model -> the sharpness they reach, seed 1 a tenth higher; both grow linearly."""
    rows = []
    for m, end in (("resnet20", 0.4), ("plain20", 0.8)):
        for s in (0, 1):
            for e in range(6):
                t = e / 5
                rows.append({"model": m, "seed": s, "epoch": e, "loss": 2.4 + t * (end - 2.4),
                             "invariant": invariant[m] * (1 + 0.1 * s) * (0.5 + 0.5 * t),
                             "raw": raw[m] * (1 + 0.1 * s) * (0.5 + 0.5 * t)})
    return pd.DataFrame(rows)


def init(ratio: float) -> pd.DataFrame:
    """depth-init: plain-56 about `ratio` times as sharp as ResNet-56 (seed 0 exactly, the
    others up to 5% off), plain-20 1.2 times ResNet-20."""
    rows = [{"model": m, "seed": s, "raw": v, "invariant": v}
            for s, off in ((0, 1.0), (1, 1.05), (2, 0.97))
            for m, v in (("resnet20", 50.0), ("plain20", 60.0), ("resnet56", 80.0),
                         ("plain56", 80.0 * ratio * off))]
    return pd.DataFrame(rows)


RESCALE = pd.DataFrame({"model": "resnet20", "seed": 0, "c": [0.5, 1.0, 2.0],
                        "loss": 0.5, "raw": [400.0, 150.0, 60.0], "invariant": 90.0})


def finding(losses=None, invariant=None, raw=None, ratio=100.0, epochs=EPOCHS):
    return claims.tf10_from(
        curves(losses or {"plain8": 0.8, "plain20": 1.0, "resnet20": 0.6}, epochs),
        sharpness(invariant or {"resnet20": 100.0, "plain20": 300.0},
                  raw or {"resnet20": 100.0, "plain20": 100.0}),
        init(ratio), RESCALE)


def test_history_decides_false_when_the_runs_show_degradation():
    found = finding()
    d = found.degradation[0]
    assert (d["shallow"], d["deep"]) == ("plain8", "plain20")
    assert d["loss"].diff == pytest.approx(0.2) and d["loss"].verdict is Verdict.UNJUDGED
    assert found.epochs == 5 and found.verdict is False


def test_no_measurement_makes_the_statement_true():
    # The opposite world: the deeper plain net trains better, the ResNet is the sharper one.
    found = finding(losses={"plain8": 1.2, "plain20": 0.9, "resnet20": 0.6},
                    invariant={"resnet20": 300.0, "plain20": 100.0}, ratio=0.5)
    assert found.degradation[0]["loss"].diff < 0
    assert found.matched[0]["invariant"].diff < 0 and found.at_init[1]["invariant"].diff < 0
    assert found.verdict is False


def test_runs_trained_too_briefly_leave_it_undecided():
    assert finding(epochs=list(range(1, MIN_EPOCHS_TO_JUDGE))).verdict is None
    assert claims.tf10_verdict(MIN_EPOCHS_TO_JUDGE - 1) is None
    assert claims.tf10_verdict(MIN_EPOCHS_TO_JUDGE) is False


def test_degradation_is_judged_over_seeds():
    frame = curves({"plain8": 0.8, "plain20": 1.0})
    frame.loc[(frame["model"] == "plain20") & (frame["seed"] == 1), "clean_train_loss"] += 0.05
    d = claims.tf10_degradation(frame)[0]["loss"]
    assert d.diff == pytest.approx(0.225) and d.verdict is Verdict.WITHIN  # 2 seeds: wide
    three = pd.concat([frame, frame[frame["seed"] == 0].assign(seed=2)])
    assert claims.tf10_degradation(three)[0]["loss"].verdict is Verdict.HIGHER
    assert claims.tf10_degradation(curves({"plain20": 1.0, "resnet20": 0.5})) == ()


def test_sharpness_is_compared_at_the_lowest_loss_every_run_reached():
    found = finding()
    m = found.matched[0]
    # plain-20 seed 0 ends at 0.8 (its lowest); every run reached it.
    assert m["level"] == pytest.approx(0.8)
    at = m["at"].set_index(["model", "seed"])
    # plain-20 gets there at its last checkpoint (its full sharpness), ResNet-20 at its
    # fourth (loss 2.4 - 4/5 * 2.0 = 0.8: 0.5 + 0.5 * 4/5 of its full sharpness).
    assert at.loc[("plain20", 0), "invariant"] == pytest.approx(300.0)
    assert at.loc[("resnet20", 0), "invariant"] == pytest.approx(100.0 * 0.9)
    # Same seed spread in both: the ratio is exact, and without spread, unjudged.
    assert factor_of(m["invariant"]) == pytest.approx(300 / 90)
    assert factor_of(m["raw"]) == pytest.approx(100 / 90)
    assert m["invariant"].verdict is Verdict.UNJUDGED


def factor_of(d):
    return math.exp(d.diff)


def test_value_at_interpolates_in_the_logarithm_of_the_loss():
    run = pd.DataFrame({"epoch": [0, 1, 2], "loss": [4.0, 2.0, 1.0], "v": [0.0, 10.0, 30.0]})
    assert claims.value_at(run, 2.0, "v") == 10.0
    assert claims.value_at(run, math.sqrt(2), "v") == pytest.approx(20.0)  # half way in log
    assert claims.value_at(run, 5.0, "v") == 0.0  # reached at the start
    assert math.isnan(claims.value_at(run, 0.5, "v"))  # never reached
    # The first time it got there counts, not a later return.
    bumpy = pd.DataFrame({"epoch": [0, 1, 2, 3], "loss": [4.0, 1.0, 3.0, 1.0],
                          "v": [0.0, 1.0, 2.0, 3.0]})
    assert claims.value_at(bumpy, 1.0, "v") == 1.0


def test_ratios_leave_out_values_without_a_logarithm():
    frame = pd.DataFrame({"model": ["a", "b", "a", "b", "a", "b"], "seed": [0, 0, 1, 1, 2, 2],
                          "v": [4.0, 2.0, 8.0, 2.0, -1.0, 2.0]})
    d = claims.log_difference(frame, "a", "b", "v")
    assert d.n == 2 and math.exp(d.diff) == pytest.approx(math.sqrt(2 * 4))


def test_depth_at_initialisation_compares_each_pair():
    found = finding(ratio=100.0)
    assert [(a["resnet"], a["plain"]) for a in found.at_init] == list(claims.PAIRS)
    deep = found.at_init[1]["invariant"]
    assert factor_of(deep) == pytest.approx(100.0, rel=0.01) and deep.verdict is Verdict.HIGHER
    assert found.at_init[0]["invariant"].diff == pytest.approx(np.log(60 / 50))
    shallow = finding(ratio=1.0).at_init[1]["invariant"]
    assert shallow.verdict is Verdict.WITHIN


def test_key_and_headline_carry_the_numbers():
    found = finding()
    assert found.headline == "training loss plain-20 minus plain-8: 0.2"
    assert "plain-20 over ResNet-20: 3.33× (not judged)" in found.key
    assert "at initialisation, plain-56 over ResNet-56: 101× (95% CI" in found.key
    assert claims.factor(math.log(2)) == "2×"
