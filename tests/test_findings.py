"""Every finding on made-up results: each rule gives each outcome it can give (True,
False and undecided for a true/false statement; every wording of a lab's short answer),
so that no rule is one that cannot lose."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.findings import ACC, claims, labs
from analysis.results import Difference, Verdict

EPOCHS = 12  # long enough to judge (findings.MIN_EPOCHS_TO_JUDGE)


def runs(column: str, values: dict, epochs: int = EPOCHS, **constant) -> pd.DataFrame:
    """One row per run: `column` = setting, seed = position, final accuracy = value (None: a
    diverged run), and `constant` columns."""
    rows = []
    for setting, accs in values.items():
        for seed, acc in enumerate(accs):
            rows.append({column: setting, "seed": seed, ACC: acc, "best_val_acc": acc,
                         "status": "diverged" if acc is None else "finished",
                         "epochs": epochs, "key": f"{setting}-{seed}", **constant})
    return pd.DataFrame(rows)


def d(verdict: Verdict, diff: float = 0.0) -> Difference:
    """A made-up difference with the given verdict."""
    return Difference(diff, diff - 0.01, diff + 0.01, 5, True, verdict)


HIGHER, LOWER, WITHIN, UNJUDGED = Verdict.HIGHER, Verdict.LOWER, Verdict.WITHIN, Verdict.UNJUDGED
ACCS = [0.50, 0.52, 0.54, 0.51, 0.53]


WOBBLE = (0.002, -0.001, 0.0, 0.001, -0.002)


def shifted(by: float, k: int = 0) -> list[float]:
    """ACCS moved by `by`, with a little noise of its own per seed (`k` rotates it, so that
    two shifted settings differ by more than a constant)."""
    wobble = WOBBLE[k:] + WOBBLE[:k]
    return [a + by + w for a, w in zip(ACCS, wobble, strict=True)]


# ---------------------------------------------------------------- the rules of Part 1

# statement -> the outcomes its tests below show it can give. A rule that cannot give both
# True and False decides nothing, and one that trains cannot stay silent on short runs.
OUTCOMES = {"tf-01": {True, False, None}, "tf-02": {True, False}, "tf-03": {True, False, None},
            "tf-04": {True, False, None}, "tf-05": {True, False, None},
            "tf-06": {True, False, None}, "tf-07": {True, False, None}}
SEEN: dict[str, set] = {}


def seen(qid: str, verdict):
    SEEN.setdefault(qid, set()).add(verdict)
    return verdict


@pytest.mark.parametrize("gain, noisy_gain, noisy_vs_bn, epochs, expected", [
    # BN helps and noise takes most of it away: steadying the inputs is why it helps.
    (d(HIGHER, 0.05), d(WITHIN, 0.01), d(LOWER, -0.04), EPOCHS, True),
    (d(LOWER, -0.03), d(WITHIN, 0.0), d(WITHIN, 0.0), EPOCHS, False),  # BN does not help
    # Noisy BN keeps most of the gain: the shift is not why.
    (d(HIGHER, 0.05), d(HIGHER, 0.04), d(WITHIN, -0.01), EPOCHS, False),
    (d(WITHIN, 0.01), d(WITHIN, 0.0), d(WITHIN, 0.0), EPOCHS, None),  # no help to explain
    (d(HIGHER, 0.05), d(WITHIN, 0.02), d(WITHIN, -0.03), EPOCHS, None),  # in between
    (d(HIGHER, 0.05), d(WITHIN, 0.01), d(LOWER, -0.04), 2, None),  # too short
])
def test_tf01_rule(gain, noisy_gain, noisy_vs_bn, epochs, expected):
    assert seen("tf-01", claims.tf01_verdict(gain, noisy_gain, noisy_vs_bn, epochs)) \
        is expected


def test_tf01_finding_names_the_kinds_and_measures_what_noise_keeps():
    frame = pd.concat([runs("kind", {"none": ACCS}, batch_norm=False, bn_noise=0.0),
                       runs("kind", {"BN": shifted(0.05)}, batch_norm=True, bn_noise=0.0),
                       runs("kind", {"noisy": shifted(0.04, 2)},
                            batch_norm=True, bn_noise=1.0)]).drop(columns="kind")
    assert list(claims.bn_kind(frame).unique()) == ["none", "BN", "noisy"]
    stats = pd.DataFrame({"out_mean": [0.0, 1.0], "out_std": [1.0, 1.0]})
    f = claims.tf01_from(frame, stats)
    assert f.gain.verdict is HIGHER and f.retained == pytest.approx(0.8, abs=0.05)
    assert f.verdict is False and f.share("out") == 0.5 and f.noise == 1.0


def test_tf02_rule():
    graphs = pd.DataFrame({"graph nodes": [19, 24, 34]})
    demo = {"matches": True, "leaf_grads_at_hook": 8, "parameters": 10}
    assert seen("tf-02", claims.tf02_verdict(demo, graphs)) is True
    assert seen("tf-02", claims.tf02_verdict({**demo, "leaf_grads_at_hook": 10}, graphs)) \
        is False  # backward had finished: nothing caught mid-way
    assert claims.tf02_verdict({**demo, "matches": False}, graphs) is False
    assert claims.tf02_verdict(demo, pd.DataFrame({"graph nodes": [19, 19, 34]})) is False


@pytest.mark.parametrize("vflip, rot, upside, crops, epochs, expected", [
    (-0.03, 0.01, 0.0, 0.01, EPOCHS, False),  # one augmentation hurts: not "any network"
    (0.03, 0.02, 0.02, 0.03, EPOCHS, True),  # every one helps
    (0.0, 0.001, 0.0, 0.0, EPOCHS, None),  # nothing beyond noise
    (-0.03, 0.01, 0.0, 0.01, 2, None),  # too short
])
def test_tf03_rule_on_made_up_runs(vflip, rot, upside, crops, epochs, expected):
    digits = runs("augmentation", {"none": ACCS, "vflip": shifted(vflip), "rot180": shifted(rot)},
                  epochs=epochs).rename(columns={ACC: "test_acc"})
    base = dict(crop_padding=4, vflip_p=0.0)
    more = pd.concat([runs("c", {"p": ACCS}, epochs=epochs, **base),
                      runs("c", {"u": shifted(upside)}, epochs=epochs, crop_padding=4,
                           vflip_p=0.5),
                      runs("c", {"l": shifted(crops)}, epochs=epochs, crop_padding=6,
                           vflip_p=0.0)])
    f = claims.tf03_from(digits, more)
    assert seen("tf-03", f.verdict) is expected
    assert f.cifar_settings == {"vflip_p": 0.5, "crop_padding": 6, "protocol_padding": 4}


def adam_steps(swing: dict, seeds: int = 5, steps: int = 80) -> pd.DataFrame:
    """Per (eps, lr) case, step losses of two epochs that wobble by about `swing` (a
    fraction) from batch to batch, a little differently per seed."""
    rows = []
    for (eps, lr), s in swing.items():
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            for epoch in (1, 2):
                for step in range(1, steps + 1):
                    rows.append({"adam_eps": eps, "lr": lr, "seed": seed, "epoch": epoch,
                                 "step": step,
                                 "loss": 1.5 * math.exp(s * (1 + 0.1 * seed) *
                                                        rng.standard_normal())})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("acc_one, swing_one, swing_default, epochs, expected", [
    (0.0, 0.01, 0.05, EPOCHS, True),  # as accurate, and the loss swings less
    (-0.05, 0.01, 0.05, EPOCHS, False),  # steadier, but less accurate
    (0.0, 0.08, 0.02, EPOCHS, False),  # as accurate, but swings more
    (0.0, 0.01, 0.05, 2, None),  # too short
])
def test_tf04_rule_on_made_up_runs(acc_one, swing_one, swing_default, epochs, expected):
    cases = {(1e-8, 1e-3): ACCS, (1e-8, 3e-3): shifted(-0.02, 1),
             (1.0, 0.1): shifted(acc_one, 2), (1.0, 0.3): shifted(acc_one - 0.03, 3)}
    frame = pd.concat([runs("case", {"c": accs}, epochs=epochs, adam_eps=eps, lr=lr)
                       for (eps, lr), accs in cases.items()])
    steps = adam_steps({(1e-8, 1e-3): swing_default, (1e-8, 3e-3): swing_default,
                        (1.0, 0.1): swing_one, (1.0, 0.3): swing_one})
    sweep = runs("adam_eps", {1e-8: ACCS, 1.0: shifted(-0.4)})
    ratios = pd.DataFrame({"adam_eps": [1e-8, 1.0], "epoch": [1, 1], "update_ratio": [0.4, 2e-4]})
    f = claims.tf04_from(sweep, ratios, frame, steps)
    assert f.best_lr == {1e-8: 1e-3, 1.0: 0.1}  # each epsilon at its better rate
    assert f.step_ratio == pytest.approx(2000)
    assert seen("tf-04", f.verdict) is expected


def test_spikes_count_jumps_against_the_runs_own_noise():
    rng = np.random.default_rng(0)
    loss = list(1.5 + 0.01 * rng.standard_normal(200))
    loss[150] = 3.0  # one lurch
    loss[170] = float("nan")  # a non-finite loss counts as a spike too
    steps = pd.DataFrame({"seed": 0, "epoch": [1] * 100 + [2] * 100, "step": range(200),
                          "loss": loss})
    out = claims.spikes(steps, []).iloc[0]
    assert out["spikes"] == pytest.approx(1000 * 2 / 100, abs=10)  # 2 (+ chance ones) in 100
    assert out["swing"] > 0


def grid(both_gain: float, lost_seed: bool = False, epochs: int = EPOCHS) -> pd.DataFrame:
    cells = {(0.0, 0.0): ACCS, (1e-3, 0.0): shifted(0.02, 1), (0.0, 0.5): shifted(0.01, 2)}
    both = shifted(0.02 + both_gain, 3)
    if lost_seed:
        both[2] = ACCS[2]  # below the better single method on one seed
    cells[(1e-3, 0.5)] = both
    return pd.concat([runs("c", {"x": accs}, epochs=epochs, weight_decay=wd, dropout=p)
                      for (wd, p), accs in cells.items()])


def grid_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(epoch=1, val_acc=frame[ACC], clean_train_acc=frame[ACC] + 0.1)


@pytest.mark.parametrize("frame, expected", [
    (grid(0.03), True),  # beats both, on every seed
    (grid(0.03, lost_seed=True), False),  # one seed lost: no guarantee
    (grid(-0.02), False),
    (grid(0.03, epochs=2), None),
])
def test_tf05_rule_on_made_up_runs(frame, expected):
    f = claims.tf05_from(frame, grid_metrics(frame))
    assert seen("tf-05", f.verdict) is expected
    assert f.seeds == 5 and f.gap["neither"] == pytest.approx(0.1)


def leaky(dead: dict, accs: dict, epochs: int = EPOCHS):
    """tf-06's three tables, made up: per (activation, lr) the final accuracies per seed
    (None: diverged) and the share of dead units at the last epoch."""
    frame = pd.concat([runs("x", {"x": a}, epochs=epochs, activation=act, lr=lr)
                       for (act, lr), a in accs.items()]).drop(columns="x")
    metrics = frame[frame["status"] == "finished"].assign(
        epoch=epochs, val_acc=lambda f: f[ACC],
        dead_fc3=[dead[(a, lr)] + 0.001 * ((s + 2 * (a == "relu")) % 5) for a, lr, s in
                  zip(frame.loc[frame["status"] == "finished", "activation"],
                      frame.loc[frame["status"] == "finished", "lr"],
                      frame.loc[frame["status"] == "finished", "seed"], strict=True)])
    steps = pd.concat([adam_steps({(0, lr): 0.02}).drop(columns="adam_eps").assign(activation=a)
                       for a, lr in accs])
    return frame, metrics, steps


CHANCE = [0.10] * 5
DIVERGED = [None] * 5


@pytest.mark.parametrize("accs, dead, expected", [
    # ReLU loses units from 0.1 and dies at 0.5; leaky keeps its units but stops training
    # already at 0.3.
    ({("relu", 0.1): ACCS, ("relu", 0.3): ACCS, ("relu", 0.5): CHANCE,
      ("leaky_relu", 0.1): ACCS, ("leaky_relu", 0.3): DIVERGED, ("leaky_relu", 0.5): DIVERGED},
     {("relu", 0.1): 0.12, ("relu", 0.3): 0.3, ("relu", 0.5): 0.8,
      ("leaky_relu", 0.1): 0.0, ("leaky_relu", 0.3): 0.0, ("leaky_relu", 0.5): 0.0}, True),
    # The same, but leaky trains as far as ReLU: it fixes dying and is no less stable.
    ({("relu", 0.1): ACCS, ("relu", 0.3): ACCS, ("relu", 0.5): CHANCE,
      ("leaky_relu", 0.1): ACCS, ("leaky_relu", 0.3): shifted(0.01, 1),
      ("leaky_relu", 0.5): DIVERGED},
     {("relu", 0.1): 0.01, ("relu", 0.3): 0.3, ("relu", 0.5): 0.8,
      ("leaky_relu", 0.1): 0.0, ("leaky_relu", 0.3): 0.0, ("leaky_relu", 0.5): 0.0}, False),
    # Leaky ReLU keeps as many dead units where ReLU loses them: it does not fix dying.
    ({("relu", 0.1): ACCS, ("leaky_relu", 0.1): ACCS},
     {("relu", 0.1): 0.3, ("leaky_relu", 0.1): 0.3}, False),
    # ReLU never loses 10% of its units: nothing to fix, nothing decided.
    ({("relu", 0.1): ACCS, ("leaky_relu", 0.1): ACCS},
     {("relu", 0.1): 0.01, ("leaky_relu", 0.1): 0.0}, None),
    # ReLU dies only where leaky ReLU diverged: its dead units are not measured there.
    ({("relu", 0.5): CHANCE, ("leaky_relu", 0.5): DIVERGED},
     {("relu", 0.5): 0.8, ("leaky_relu", 0.5): 0.0}, None),
])
def test_tf06_rule_on_made_up_runs(accs, dead, expected):
    f = claims.tf06_from(*leaky(dead, accs))
    assert seen("tf-06", f.verdict) is expected


def test_tf06_stable_rate_is_the_largest_where_every_seed_trains():
    f = claims.tf06_from(*leaky(
        {("relu", 0.1): 0.0, ("relu", 0.3): 0.0, ("leaky_relu", 0.1): 0.0,
         ("leaky_relu", 0.3): 0.0},
        {("relu", 0.1): ACCS, ("relu", 0.3): [*ACCS[:4], 0.1],  # one seed collapsed
         ("leaky_relu", 0.1): ACCS, ("leaky_relu", 0.3): [*ACCS[:4], None]}))  # one diverged
    assert f.stable == {"relu": 0.1, "leaky_relu": 0.1}
    assert f.table.loc[(0.3, "relu"), "collapsed"] == 1
    assert f.table.loc[(0.3, "leaky_relu"), "diverged"] == 1


def states(fractions: dict) -> dict:
    """A LeNet-like state_dict per penalty whose weights are below 1e-3 in `fraction` of
    places (varying a little per seed)."""
    out = {}
    for (p, seed), f in fractions.items():
        w = torch.full((1000,), 0.1)
        w[: int(1000 * (f + 0.01 * seed))] = 1e-4
        out[f"{p}-{seed}"] = {"features.0.weight": w.reshape(10, 100), "features.0.bias": w[:10]}
    return out


def l1_runs(accs: dict) -> pd.DataFrame:
    rows = []
    for (l1, wd), a in accs.items():
        rows.append(runs("p", {"L1" if l1 else "L2" if wd else "none": a}, l1=l1,
                         weight_decay=wd))
    frame = pd.concat(rows)
    return frame.assign(key=[f"{claims.penalty(r)}-{r['seed']}" for _, r in frame.iterrows()])


@pytest.mark.parametrize("l1_acc, l1_share, partner, expected", [
    (shifted(0.001), 0.30, "L2 0.0001", True),  # as accurate, far sparser
    (shifted(0.001), 0.01, "L2 0.0001", False),  # as accurate, less sparse
    (shifted(-0.2), 0.30, "L2 0.001", None),  # no L2 setting as accurate: no comparison
    # Less accurate beyond noise, but by half a point: equivalent within the margin, a pair.
    (shifted(-0.005), 0.30, "L2 0.0001", True),
    # Within noise but too noisy to be equivalent: no comparison.
    ([a + d for a, d in zip(ACCS, (0.03, -0.03, 0.02, -0.02, 0.0), strict=True)], 0.30,
     "L2 0.0001", None),
])
def test_tf07_rule_on_made_up_runs(l1_acc, l1_share, partner, expected):
    accs = {(1e-4, 0.0): l1_acc, (0.0, 1e-4): ACCS, (0.0, 1e-3): shifted(-0.05, 3)}
    frame = l1_runs(accs)
    shares = {("L1 0.0001", s): l1_share for s in range(5)}
    shares |= {("L2 0.0001", s): 0.05 for s in range(5)}
    shares |= {("L2 0.001", s): 0.06 for s in range(5)}
    f = claims.sparsity_from(frame, states(shares))
    assert f.pairs[0]["l2"] == partner  # the L2 strength of closest accuracy
    assert seen("tf-07", f.verdict) is expected
    assert f.share("L1 0.0001") == pytest.approx(l1_share + 0.02, abs=1e-3)


def test_every_rule_can_give_every_outcome_it_claims():
    """Runs last (tests run in file order): every rule returned both verdicts, and the
    undecided one where it can be undecided."""
    for qid, outcomes in OUTCOMES.items():
        assert SEEN.get(qid) == outcomes, f"{qid}: the tests showed {SEEN.get(qid)}"
        assert {True, False} <= outcomes


# ---------------------------------------------------------------- the labs

def test_lab1_a_checks_pass_or_fail():
    ok = labs.lab1_a_from(pd.DataFrame({"init_val_loss": [2.30, 2.31], "init_val_acc": [0.1] * 2}))
    assert ok.sane and ok.short.startswith("All three checks pass") and ok.params == 62_006
    assert ok.layer_params == (456, 2416, 48120, 10164, 850)
    bad = labs.lab1_a_from(pd.DataFrame({"init_val_loss": [3.5], "init_val_acc": [0.1]}))
    assert not bad.sane and bad.short.startswith("A sanity check fails")


def test_lab1_c_balanced_or_not():
    counts = pd.DataFrame({"train": [10, 10], "validation": [5, 5], "test": [7, 7]},
                          index=["cat", "dog"])
    assert labs.Lab1C(counts).balanced
    assert "unbalanced" in labs.Lab1C(counts.assign(test=[7, 3])).short


def test_lab1_d_says_where_the_runs_ran():
    cpu = labs.lab1_d_from(pd.DataFrame({"device": ["cpu"]}))
    assert not cpu.on_gpu and cpu.memory_total is None and "no GPU" in cpu.short
    gpu = labs.lab1_d_from(pd.DataFrame({"device": ["cuda:0 (H200)"],
                                         "device_memory_total": [1.4e11],
                                         "device_memory_peak_allocated": [5e8]}))
    assert gpu.on_gpu and gpu.memory_peak == 5e8 and "ran on the GPU" in gpu.short


def lab1_metrics(train: list, val: list, val_loss: list, seeds: int = 3) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        for epoch, (t, v, loss) in enumerate(zip(train, val, val_loss, strict=True), start=1):
            w = 0.002 * seed
            rows.append({"seed": seed, "epoch": epoch, "clean_train_acc": t + w,
                         "val_acc": v - w, "val_loss": loss, "clean_train_loss": 2 - t})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("train, val, loss, diagnosis", [
    ([0.4, 0.6, 0.8, 0.9], [0.4, 0.5, 0.55, 0.55], [1.8, 1.4, 1.3, 1.9], "overfits"),
    ([0.4, 0.6, 0.8, 0.9], [0.4, 0.5, 0.55, 0.55], [1.8, 1.4, 1.3, 1.3], "starts to overfit"),
    ([0.4, 0.5, 0.55, 0.56], [0.4, 0.5, 0.55, 0.555], [1.8, 1.4, 1.3, 1.25], "underfits"),
])
def test_lab1_g_diagnosis(train, val, loss, diagnosis):
    base = pd.DataFrame({"init_val_loss": [2.303], "test_best_acc": [0.5],
                         "test_final_acc": [0.5]})
    g = labs.lab1_g_from(base, lab1_metrics(train, val, loss))
    assert g.diagnosis == diagnosis
    assert g.short.startswith("Initial loss ≈ ln 10")


@pytest.mark.parametrize("kaiming, word", [
    (shifted(0.03), "higher"), (shifted(-0.03), "lower"), (shifted(0.0005), "equivalent"),
    ([a + w for a, w in zip(ACCS, (0.03, -0.02, 0.01, -0.03, 0.02), strict=True)],
     "inconclusive"),
])
def test_lab1_h_says_what_the_data_show(kaiming, word):
    frame = runs("init", {"default": ACCS, "kaiming_normal": kaiming}).assign(init_val_loss=2.3)
    metrics = frame.assign(epoch=1, val_acc=frame[ACC])
    h = labs.lab1_h_from(frame, metrics)
    assert h.short == f"Against the default: Kaiming normal {word}"


def augment_runs(top_shift: float) -> pd.DataFrame:
    cells = {(0, 0.0): ACCS, (4, 0.5): shifted(0.05, 1), (6, 0.5): shifted(0.05 + top_shift, 2)}
    return pd.concat([runs("x", {"x": a}, crop_padding=p, flip_p=f)
                      for (p, f), a in cells.items()]).drop(columns="x")


@pytest.mark.parametrize("top_shift, where", [
    (0.03, "below it beyond noise"), (-0.03, "the protocol's setting"),
    (0.001, "within noise of it"),
])
def test_lab2_a_sets_the_protocol_against_the_best_cells(top_shift, where):
    frame = augment_runs(top_shift)
    metrics = frame.assign(epoch=1, val_acc=frame[ACC], clean_train_acc=frame[ACC] + 0.05)
    a = labs.lab2_a_from(frame, metrics, labs.cell_name(4, 0.5))
    assert where in a.short
    assert a.gain.verdict is HIGHER  # the best cell beats no augmentation


@pytest.mark.parametrize("shift, start, end", [
    (0.05, "A faster start", "higher final accuracy"),
    (-0.05, "A slower start", "lower final accuracy"),
    (0.0005, "No faster start beyond noise", "final accuracy within noise"),
])
def test_lab2_b_bn_short_answer(shift, start, end):
    frame = runs("batch_norm", {False: ACCS, True: shifted(shift)}, bn_noise=0.0)
    bn = labs.lab2_b_bn_from(frame, frame.assign(epoch=1, val_acc=frame[ACC]))
    assert bn.short == f"{start}, {end}"


def bn_lr(cells: dict) -> pd.DataFrame:
    return pd.concat([runs("x", {"x": a}, batch_norm=bn, lr=lr) for (bn, lr), a in cells.items()])


def test_lab2_b_lr_widens_when_only_bn_learns_at_some_rate():
    # The case the callout and the prose once disagreed on: no rate learns at every seed
    # without batch norm, some do with it.
    f = labs.lab2_b_lr_from(bn_lr({(False, 0.1): [*ACCS[:4], 0.1], (True, 0.1): ACCS,
                                   (False, 0.01): [0.1, *ACCS[1:]], (True, 0.01): ACCS}))
    assert math.isnan(f.works[False]) and f.works[True] == 0.1
    assert f.wider and f.short.startswith("Yes")
    assert f.at_shared is None and f.shared is None


def test_lab2_b_lr_not_wider_on_this_grid():
    f = labs.lab2_b_lr_from(bn_lr({(False, 0.1): ACCS, (True, 0.1): shifted(0.01, 1),
                                   (False, 1.0): DIVERGED, (True, 1.0): CHANCE}))
    assert f.works == {False: 0.1, True: 0.1} and f.breaks == {False: 1.0, True: 1.0}
    assert not f.wider and f.short.startswith("Not on this grid")
    assert f.shared == 0.1 and f.at_shared.verdict is HIGHER


@pytest.mark.parametrize("swish, start", [
    (shifted(0.03), "Yes"), (shifted(-0.03), "No: measurably worse"),
    (shifted(0.0005), "No: equivalent"),
    ([a + w for a, w in zip(ACCS, (0.03, -0.02, 0.01, -0.03, 0.02), strict=True)],
     "Not measurably"),
    ([0.5], "Not judged"),
])
def test_lab2_b_swish_short_answer(swish, start):
    relu = ACCS[:len(swish)]
    f = labs.lab2_b_swish_from(runs("activation", {"relu": relu, "swish": swish}))
    assert f.short.startswith(start)


def test_lab2_c_lr_names_the_best_the_tied_and_the_failed_rates():
    frame = runs("lr", {1.0: DIVERGED, 0.5: CHANCE, 0.1: shifted(0.001), 0.05: ACCS,
                        0.001: shifted(-0.3, 2)})
    metrics = pd.DataFrame({"key": [f"0.5-{s}" for s in range(5)], "epoch": 1,
                            "train_loss": 40.0, "val_acc": 0.1})
    steps = pd.DataFrame({"key": ["1.0-0"] * 2, "lr": [1.0] * 2, "seed": 0, "epoch": 1,
                          "step": [1, 2], "loss": [2.3, 1e9]})
    f = labs.lab2_c_lr_from(frame, metrics, steps, protocol_lr=0.05)
    assert f.best == 0.1 and f.tied == (0.05,) and f.failing == (0.5, 1.0)
    assert f.short == "Best at lr 0.1 (0.05 within noise); lr 0.5 and 1 fail"
    assert f.collapse == {"first_epoch_loss": 40.0, "later_from_ln10": math.nan,
                          "constant": True} or f.collapse["constant"]
    assert len(f.early) == 2 and f.slowest == 0.001


@pytest.mark.parametrize("gap_change, acc_change, short", [
    (-0.05, -0.02, "At 0.01: a narrower gap, lower accuracy"),
    (0.0, 0.0001, "At 0.01: no change in the gap beyond noise, accuracy within noise"),
    (-0.05, 0.02, "At 0.01: a narrower gap, higher accuracy"),
])
def test_lab2_c_l2_short_answer(gap_change, acc_change, short):
    frame = runs("weight_decay", {0.0: ACCS, 0.01: shifted(acc_change)}, sizes_train=2500)
    wobble = [0.002 * ((7 * s + 3 * (w > 0)) % 5) for s, w in
              zip(frame["seed"], frame["weight_decay"], strict=True)]
    metrics = frame.assign(epoch=30, val_acc=frame[ACC],
                           clean_train_acc=frame[ACC] + 0.2 + wobble
                           + np.where(frame["weight_decay"] > 0, gap_change + acc_change, 0))
    f = labs.lab2_c_l2_from(frame, metrics)
    assert f.short == short and f.overfits and f.images == 2500


def test_lab1_b_reports_the_statistics_before_and_after():
    b = labs.Lab1B((0.49, 0.48, 0.45), (0.25, 0.24, 0.26), (1e-7, -2e-7, 0.0),
                   (1.0, 1.0000001, 0.9999999))
    assert b.key.startswith("training-split mean 0.49 / 0.48 / 0.45, std 0.25 / 0.24 / 0.26")
    assert "within 2e-7 of 0" in b.key and b.headline == "mean 0.49 / 0.48 / 0.45"


@pytest.mark.parametrize("epochs, subset, train_acc, shortened, fits", [
    (6, 10000, 0.70, True, False), (100, None, 0.99, False, True), (100, 5000, 0.98, True, True),
])
def test_lab3_says_whether_the_schedule_is_shortened_and_fits(epochs, subset, train_acc,
                                                             shortened, fits):
    recipe = pd.Series({"epochs": epochs, "subset": subset})
    test = pd.Series({"mean": 0.9, "ci_low": 0.88, "ci_high": 0.92, "n": 3})
    r = labs.Lab3(recipe, test, 0.9, 10.0, ("cpu",), 100, train_acc, 0.9, 0.6, 0.9125, 182,
                  0.9066, 105)
    assert (r.shortened, r.fits) == (shortened, fits)
    table = r.comparison()
    assert list(table["test accuracy (%)"]) == [90.0, 91.25, 90.66, 91.5]
    assert "mean of 3 seeds" in table["source"].iloc[0] and "3 seeds" in r.key
