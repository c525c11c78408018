"""Findings of the two cost analyses of Part 1: depthwise separable convolutions (tf-08,
static MACs and measured latency) and SqueezeNet against AlexNet (tf-09, static).

tf-08's loader only gathers one latency run of `experiments/costs.ipynb` (its timings, the
machine's ceilings and hardware) and the static cost table of ResNet-20's 3x3 convs;
`tf08_from` computes everything the section quotes from those, so that tests can give it
made-up timings. tf-09 needs no run: fvcore counts SqueezeNet and AlexNet statically.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from analysis import results
from analysis.findings import Finding
from analysis.plots import DEVICES, maybe, times

# ---------------------------------------------------------------- tf-08

CLAIMED = 9  # the statement's speedup
ABOUT = 8  # "about 9x", read generously: at least this, in the most favourable measurement
REFERENCE_BATCH = 32  # the batch size the section quotes per layer (else the largest measured)
PASSES = ("forward", "forward+backward")
FORMS = ("standard", "separable")
MEASUREMENT = ["device", "pass", "batch"]  # one all-layers figure per such combination
ALL_LAYERS = "all layers"  # the `scope` of an all-layers figure (`most_favourable`)

# The roof "takes speed" from a layer shape when its speedup at the roof falls short of its
# MAC ratio by more than rounding: both forms compute-bound give exactly the MAC ratio.
ROOF_TOLERANCE = 1e-6


def speed(x: float) -> str:
    """A measured speedup, as every table and sentence of the section shows it: '1.37×'."""
    return times(x, 2)


def layer_label(shape: str) -> str:
    """A layer shape of `flops.conv3x3_layers` for readers: '16->32 s2 @16x16' ->
    '16→32, stride 2, 16×16' (input and output channels, stride, output size)."""
    match = re.fullmatch(r"(\d+)->(\d+) s(\d+) @(\d+)x(\d+)", shape)
    if not match:
        return shape
    cin, cout, stride, h, w = match.groups()
    return f"{cin}→{cout}, stride {stride}, {h}×{w}"


def all_layers(lat: pd.DataFrame, shapes) -> pd.DataFrame:
    """Per device, pass and batch: the summed seconds of all of ResNet-20's standard 3x3
    convs (each layer shape `count` times), `standard_s`, those of their separable
    replacements, `separable_s`, and `speedup`, their ratio. Only where every one of
    `shapes` has a row in `lat` (pass the sane rows): a partial sum answers nothing."""
    layer = lat[lat["scope"] == "layer"]
    columns = [*MEASUREMENT, "standard_s", "separable_s", "speedup"]
    if layer.empty:
        return pd.DataFrame(columns=columns)
    layer = layer.assign(standard_s=layer["count"] * layer["standard_s"],
                         separable_s=layer["count"] * layer["separable_s"])
    grouped = layer.groupby(MEASUREMENT)
    complete = grouped["shape"].agg(lambda s: set(s) == set(shapes)).astype(bool)
    sums = grouped[["standard_s", "separable_s"]].sum()[complete].reset_index()
    return sums.assign(speedup=sums["standard_s"] / sums["separable_s"])[columns]


def most_favourable(lat: pd.DataFrame, shapes) -> dict:
    """The measurement tf-08's rule reads among the rows of `lat`: the best all-layers
    figure (`all_layers`) where there is one, else the best single layer shape, over every
    batch size, pass and device. Its device, pass, batch, scope (ALL_LAYERS or 'layer'),
    shape (None for all layers) and speedup; with no layer row at all, speedup NaN and
    the rest None."""
    overall = all_layers(lat, shapes)
    layer = lat[lat["scope"] == "layer"]
    if len(overall):
        row, scope, shape = overall.loc[overall["speedup"].idxmax()], ALL_LAYERS, None
    elif len(layer):
        row = layer.loc[layer["speedup"].idxmax()]
        scope, shape = "layer", row["shape"]
    else:
        return {"device": None, "pass": None, "batch": None, "scope": None, "shape": None,
                "speedup": math.nan}
    return {"device": row["device"], "pass": row["pass"], "batch": int(row["batch"]),
            "scope": scope, "shape": shape, "speedup": float(row["speedup"])}


def sane(measured: pd.DataFrame) -> pd.DataFrame:
    """The latency rows that passed the sanity checks (`flops.latency_problems`): the only
    ones that are results. The CSV reads a sane row's empty flag as missing."""
    return measured[measured["flag"].fillna("") == ""]


def tf08_verdict(measured: pd.DataFrame, shapes) -> bool | None:
    """True if the most favourable measurement (`most_favourable` of the rows that passed
    the sanity checks: all layers together where every one of `shapes` has a sane timing,
    else the best single layer shape) reaches ABOUT (8x); else False. None when no layer
    timing passed the checks: there is no measurement to read (measure again on a quieter
    machine: dlbook run --only tf-08 --force)."""
    best = most_favourable(sane(measured), shapes)["speedup"]
    return None if math.isnan(best) else bool(best >= ABOUT)


def reconcile(lat: pd.DataFrame, shapes) -> pd.DataFrame:
    """The whole network's speedup predicted from its convolutions' timings, beside the
    measured one, per device, pass and batch where every layer shape and the network have
    a row in `lat`.

    Replacing the convs leaves the rest of the network (batch norms, ReLUs, shortcuts,
    pooling, classifier) as it is: from the standard network's measured time N and the
    convs' summed times timed one by one, C standard and S separable, the separable
    network should take N - C + S, a speedup `predicted` = N / (N - C + S) (NaN where
    the convs alone took longer than N - S). `share` = C / N; `gap` = measured over
    predicted, less 1. Times in seconds."""
    convs = all_layers(lat, shapes).drop(columns="speedup").rename(
        columns={"standard_s": "convs_standard_s", "separable_s": "convs_separable_s"})
    net = lat.loc[lat["scope"] == "network", [*MEASUREMENT, "standard_s", "separable_s"]].rename(
        columns={"standard_s": "network_standard_s", "separable_s": "network_separable_s"})
    out = convs.merge(net, on=MEASUREMENT)
    rest = out["network_standard_s"] - out["convs_standard_s"] + out["convs_separable_s"]
    out["share"] = out["convs_standard_s"] / out["network_standard_s"]
    out["predicted"] = (out["network_standard_s"] / rest).where(rest > 0)
    out["measured"] = out["network_standard_s"] / out["network_separable_s"]
    out["gap"] = out["measured"] / out["predicted"] - 1
    return out


def roofline_points(lat: pd.DataFrame, ceilings: dict, batch: int) -> pd.DataFrame:
    """Each forward layer timing of `lat` at `batch`, one point per form, on its device's
    roofline: device, shape, form, `intensity` (MACs per byte it must move at the least),
    `gmacs` (1e9 MACs per second it reached), `roof` (the most its intensity allows,
    `flops.attainable`) and `of_roof` = gmacs / roof."""
    from analysis.flops import attainable

    rows = lat[(lat["scope"] == "layer") & (lat["pass"] == "forward") & (lat["batch"] == batch)]
    points = pd.concat([pd.DataFrame({
        "device": rows["device"], "shape": rows["shape"], "form": form,
        "intensity": rows[f"intensity_{form}"],
        "gmacs": rows[f"macs_{form}"] * rows["batch"] / rows[f"{form}_s"] / 1e9})
        for form in FORMS], ignore_index=True)
    peak = points["device"].map(lambda d: ceilings[d]["peak_gmacs"])
    bandwidth = points["device"].map(lambda d: ceilings[d]["bandwidth_gbs"])
    points["roof"] = attainable(points["intensity"], peak, bandwidth)
    points["of_roof"] = points["gmacs"] / points["roof"]
    return points


def at_the_roof(layers: pd.DataFrame, roof: dict) -> pd.DataFrame:
    """`layers` (`flops.separable_table`) with, per layer shape, `bytes_ratio`: the bytes the
    separable pair must move over those of the standard conv, and `roof_speedup`: the
    speedup if both forms ran exactly at the roof of `roof` (a device's ceilings)."""
    from analysis.flops import attainable

    def at_roof(form):  # the time at the roof, in units that cancel in the ratio
        return layers[f"macs_{form}"] / attainable(layers[f"intensity_{form}"],
                                                   roof["peak_gmacs"], roof["bandwidth_gbs"])

    def moved(form):  # bytes, up to the batch size, which cancels in the ratio
        return layers[f"macs_{form}"] / layers[f"intensity_{form}"]

    return layers.assign(bytes_ratio=moved("separable") / moved("standard"),
                         roof_speedup=at_roof("standard") / at_roof("separable"))


@dataclass(frozen=True)
class TF08(Finding):
    """ResNet-20's 3x3 convolutions against their depthwise separable replacements: static
    MACs, measured latency, the machine's roofline."""

    layers: pd.DataFrame = field(compare=False)  # at_the_roof(separable_table at `batch`)
    measured: pd.DataFrame = field(compare=False)  # every latency row; flag "" = sane
    overall: pd.DataFrame = field(compare=False)  # all_layers of the sane rows
    reconciled: pd.DataFrame = field(compare=False)  # reconcile of the sane rows
    points: pd.DataFrame = field(compare=False)  # roofline_points of the sane rows at `batch`
    ceilings: dict = field(compare=False)  # per device: flops.ceilings
    hardware: dict = field(compare=False)  # flops.hardware
    batch: int  # the reference batch size: REFERENCE_BATCH if measured, else the largest
    max_spread: float  # the run's sanity bound on the spread of repeats
    retries: int  # how often the run measured a flagged row again
    best: dict = field(compare=False)  # most_favourable of the sane rows
    verdict: bool | None

    @property
    def sane(self) -> pd.DataFrame:
        return sane(self.measured)

    @property
    def flagged(self) -> pd.DataFrame:
        return self.measured[self.measured["flag"] != ""]

    def flagged_for(self, reason: str) -> int:
        """Flagged rows whose reasons mention `reason` ('faster than forward', 'spread')."""
        return int(self.flagged["flag"].str.contains(reason, regex=False).sum())

    @property
    def convs(self) -> int:
        """ResNet-20's 3x3 convolutions."""
        return int(self.layers["count"].sum())

    @property
    def mac_ratio(self) -> float:
        """MACs of all the standard 3x3 convs over those of their replacements."""
        layers = self.layers
        return float((layers["count"] * layers["macs_standard"]).sum()
                     / (layers["count"] * layers["macs_separable"]).sum())

    @property
    def formula(self) -> dict[int, float]:
        """1 / (1/N + 1/9) by output channels N."""
        return self.layers.groupby("cout")["formula"].first().to_dict()

    @property
    def network_timings(self) -> pd.DataFrame:
        """The whole network's rows, flagged ones included: one per device, batch, pass."""
        return self.measured[self.measured["scope"] == "network"]

    @property
    def network_costs(self) -> pd.Series:
        """MACs per image of ResNet-20 and of its separable twin (batch norms and all), and
        their ratio; NaN where the run timed no network."""
        rows = self.network_timings
        columns = ["macs_standard", "macs_separable", "mac_ratio"]
        return rows[columns].iloc[0] if len(rows) else pd.Series(math.nan, index=columns)

    @property
    def network_mac_ratio(self) -> float:
        return float(self.network_costs["mac_ratio"])

    @property
    def threads(self) -> int:
        return int(self.measured["threads"].iloc[0])

    @property
    def short_share(self) -> float:
        """The share of sane timings (layers and network) below their MAC ratio."""
        return float((self.sane["speedup"] < self.sane["mac_ratio"]).mean())

    def speedups(self, pass_: str, device: str = "cpu") -> pd.Series:
        """Sane speedups at the reference batch: one per layer shape (NaN: flagged), all the
        layers together (ALL_LAYERS) and the whole network ('network')."""
        def at(frame):  # speedup by shape, at this device, pass and batch
            return frame[(frame["device"] == device) & (frame["pass"] == pass_)
                         & (frame["batch"] == self.batch)].set_index("shape")["speedup"]

        measured = at(self.sane)
        overall = at(self.overall.assign(shape=ALL_LAYERS))
        shapes = [*self.layers["shape"], ALL_LAYERS, "network"]
        return pd.Series([*pd.concat([measured, overall]).reindex(shapes)], index=shapes,
                         dtype=float)

    @property
    def by_layer(self) -> pd.DataFrame:
        """One row per layer shape, then all the layers together (ALL_LAYERS) and the whole
        network ('network'): how many convs (`count`), MACs per image of both forms, the MAC
        ratio, the formula (layers only), and the sane speedup of each pass at the reference
        batch on the CPU (NaN: flagged)."""
        layers = self.layers.set_index("shape")
        network = self.network_costs
        out = layers[["count", "macs_standard", "macs_separable", "mac_ratio", "formula"]].copy()
        out.loc[ALL_LAYERS] = [self.convs, (layers["count"] * layers["macs_standard"]).sum(),
                               (layers["count"] * layers["macs_separable"]).sum(),
                               self.mac_ratio, math.nan]
        out.loc["network"] = [math.nan, network["macs_standard"], network["macs_separable"],
                              network["mac_ratio"], math.nan]
        for pass_ in PASSES:
            out[pass_] = self.speedups(pass_)
        return out

    def best_on(self, device: str) -> float:
        """The best all-layers speedup measured on `device` (NaN: none)."""
        return float(self.overall.loc[self.overall["device"] == device, "speedup"].max())

    @property
    def best_where(self) -> str:
        """Where the most favourable measurement was taken, in words."""
        b = self.best
        if b["scope"] is None:
            return "no layer timing passed the checks"
        what = (f"all {self.convs} layers together" if b["scope"] == ALL_LAYERS
                else f"the layer shape {layer_label(b['shape'])} alone")
        return (f"{what}, {b['pass']} at batch size {b['batch']} on the "
                f"{DEVICES.get(b['device'], b['device'])}")

    @property
    def roof(self) -> dict:
        """The CPU's ceilings (the section's roofline)."""
        return self.ceilings["cpu"]

    @property
    def left_of_ridge(self) -> int:
        """Separable pairs whose intensity lies left of the CPU's ridge (memory-bound)."""
        return int((self.layers["intensity_separable"] < self.roof["ridge"]).sum())

    @property
    def capped(self) -> int:
        """Layer shapes whose speedup at the roof falls short of their MAC ratio."""
        layers = self.layers
        return int((layers["roof_speedup"] < layers["mac_ratio"] * (1 - ROOF_TOLERANCE)).sum())

    def of_roof(self, form: str, device: str = "cpu") -> pd.Series:
        """The share of its roof each layer shape of `form` reached (forward, reference
        batch)."""
        p = self.points
        return p.loc[(p["device"] == device) & (p["form"] == form), "of_roof"]

    def above_roof(self, device: str = "cpu") -> int:
        p = self.points
        return int((p.loc[p["device"] == device, "of_roof"] > 1).sum())

    @property
    def key(self) -> str:
        return (f"MAC ratio {times(self.mac_ratio, 2)} over all {self.convs} "
                f"layers, best measured speedup {maybe(self.best['speedup'], speed)}")

    @property
    def headline(self) -> str:
        return f"best {maybe(self.best['speedup'], speed)}, MACs {times(self.mac_ratio, 2)}"


def tf08_from(measured: pd.DataFrame, layers: pd.DataFrame, ceilings: dict, hardware: dict,
              max_spread: float, retries: int, batch: int) -> TF08:
    """tf-08's finding from one latency run: `measured` (`flops.latency_table`, flagged rows
    included), `layers` (`flops.separable_table` at the reference `batch`), the machine's
    `ceilings` per device and `hardware`, and the run's sanity bound and retries."""
    measured = measured.assign(flag=measured["flag"].fillna(""))
    ok, shapes = sane(measured), list(layers["shape"])
    return TF08(at_the_roof(layers, ceilings["cpu"]), measured, all_layers(ok, shapes),
                reconcile(ok, shapes), roofline_points(ok, ceilings, batch), ceilings, hardware,
                batch, max_spread, retries, most_favourable(ok, shapes),
                tf08_verdict(measured, shapes))


def reference_batch(batches) -> int:
    return REFERENCE_BATCH if REFERENCE_BATCH in set(batches) else int(max(batches))


def tf_08(results_dir=None) -> TF08:
    from analysis import flops

    run = results.runs(experiment="depthwise-latency", results=results_dir).iloc[0]
    measured = results.table("latency", experiment="depthwise-latency", results=results_dir)
    folder = results.run_dir(run["key"], results_dir)
    batch = reference_batch(measured["batch"])
    return tf08_from(measured, flops.separable_table(batch=batch),
                     results.read_json(folder / "ceilings.json"),
                     results.read_json(folder / "hardware.json"),
                     float(run["max_spread"]), int(run["retries"]), batch)


# ---------------------------------------------------------------- tf-09

LATE = 0.5  # "most computation in later stages": more than half of the MACs
LATE_MAPS = ("27x27", "13x13", "1x1")  # SqueezeNet's maps after its second max-pool (fire4)
SQUEEZENET, ALEXNET = "SqueezeNet 1.0", "AlexNet"
EARLY = "SqueezeNet, early downsampling"  # flops.VARIANTS: the pools after conv1, fire2, fire3
IMAGENET_INPUT = (3, 224, 224)


def late_share(stages: pd.DataFrame) -> float:
    """The share of a network's MACs in the stages (`flops.group_costs` by stage) whose
    output resolution is one of LATE_MAPS."""
    return float(stages.loc[stages["resolution"].isin(LATE_MAPS), "macs"].sum()
                 / stages["macs"].sum())


def tf09_verdict(stages: pd.DataFrame, variants: pd.DataFrame) -> bool:
    """The claim needs both parts: more than LATE of SqueezeNet's MACs late (`stages`, its
    stage table), and that placement being what saves the parameters: moving the pools
    early (`variants`, `flops.squeezenet_variants` by variant) changes the count."""
    early_same = variants.loc[EARLY, "params"] == variants.loc[SQUEEZENET, "params"]
    return bool(late_share(stages) > LATE and not early_same)


@dataclass(frozen=True)
class TF09(Finding):
    """SqueezeNet 1.0 against AlexNet, and SqueezeNet with one design choice undone."""

    variants: pd.DataFrame = field(compare=False)  # flops.squeezenet_variants, by variant
    stages: pd.DataFrame = field(compare=False)  # per model: flops.group_costs by stage
    layers: pd.DataFrame = field(compare=False)  # per model: flops.group_costs by layer
    verdict: bool | None

    @property
    def squeezenet(self) -> pd.Series:
        return self.variants.loc[SQUEEZENET]

    @property
    def alexnet(self) -> pd.Series:
        return self.variants.loc[ALEXNET]

    @property
    def early(self) -> pd.Series:
        return self.variants.loc[EARLY]

    def stages_of(self, model: str) -> pd.DataFrame:
        return self.stages[self.stages["model"] == model]

    def layers_of(self, model: str) -> pd.DataFrame:
        return self.layers[self.layers["model"] == model].set_index("layer")

    @property
    def late_share(self) -> float:
        """SqueezeNet's MACs after its second max-pool (27x27 maps and smaller)."""
        return late_share(self.stages_of(SQUEEZENET))

    @property
    def top_stage(self) -> str:
        """The resolution of SqueezeNet's stage with the most MACs."""
        stages = self.stages_of(SQUEEZENET)
        return str(stages.loc[stages["macs"].idxmax(), "resolution"])

    def share(self, model: str, layers: list[str], of: str = "params") -> float:
        """The share of `model`'s parameters (or MACs) in `layers`."""
        table = self.layers_of(model)
        return float(table.loc[layers, of].sum() / table[of].sum())

    @property
    def early_params_same(self) -> bool:
        return bool(self.early["params"] == self.squeezenet["params"])

    def ratio(self, variant: str, of: str = "params") -> float:
        """`variant`'s parameters (or MACs) over SqueezeNet 1.0's."""
        return float(self.variants.loc[variant, of] / self.squeezenet[of])

    @property
    def key(self) -> str:
        sq, alex = self.squeezenet, self.alexnet
        return (f"{times(alex['params'] / sq['params'])} fewer parameters than AlexNet, "
                f"{times(sq['macs'] / alex['macs'], 2)} its MACs; pooling early leaves the "
                f"parameters {'unchanged' if self.early_params_same else 'changed'}")

    @property
    def headline(self) -> str:
        return f"{times(self.alexnet['params'] / self.squeezenet['params'])} fewer parameters"


def tf_09(results_dir=None) -> TF09:
    from analysis import flops, models

    costs = {title: flops.module_costs(models.build_model(name), IMAGENET_INPUT)
             for name, title in (("squeezenet1_0", SQUEEZENET), ("alexnet", ALEXNET))}

    def grouped(by):
        return pd.concat([flops.group_costs(c, by).assign(model=title)
                          for title, c in costs.items()], ignore_index=True)

    stages, layers = grouped("stage"), grouped("layer")
    variants = flops.squeezenet_variants(IMAGENET_INPUT).set_index("variant")
    return TF09(variants, stages, layers,
                tf09_verdict(stages[stages["model"] == SQUEEZENET], variants))


FINDINGS = {"tf-08": tf_08, "tf-09": tf_09}


# ---------------------------------------------------------------- the costs appendix

# Every model the book trains, and the two it only analyses (tf-09): title, name, options, role.
BOOK_MODELS = [
    ("LeNet-5", "lenet5", {}, "trained (labs 1 and 2)"),
    ("LeNet-5 with batch norm", "lenet5", {"batch_norm": True}, "trained (lab 2)"),
    ("ResNet-20", "resnet20", {}, "trained (lab 3)"),
    ("plain-20", "plain20", {}, "trained (tf-10, loss landscape)"),
    ("ResNet-56", "resnet56", {}, "trained, full profile only (tf-10)"),
    ("plain-56", "plain56", {}, "trained, full profile only (tf-10)"),
    ("ResNet-20, depthwise separable", "resnet20_separable", {}, "timed (tf-08)"),
    ("SqueezeNet 1.0", "squeezenet1_0", {}, "analysed (tf-09)"),
    ("AlexNet", "alexnet", {}, "analysed (tf-09)"),
]


def book_models() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per model of `BOOK_MODELS`: its fvcore totals, PyTorch's own FLOP count (twice the
    conv and linear MACs when the two counters agree), the ops fvcore counts as zero; and
    each model's cost table per stage, keyed by title."""
    from analysis import flops, models

    rows, stages = [], {}
    for title, name, options, role in BOOK_MODELS:
        model, shape = models.build_model(name, **options), flops.default_input(name)
        total = flops.totals(model, shape)
        by_op = total["macs_by_operator"]
        skipped = flops.skipped_ops(model, shape)["op"].str.removeprefix("aten::")
        rows.append({
            "model": title, "role": role, "input": "×".join(map(str, shape)),
            "params": total["params"], "macs": total["macs"],
            "conv_linear_flops": 2 * (by_op.get("conv", 0) + by_op.get("linear", 0)),
            "torch_flops": flops.torch_flops(model, shape),
            "zero": ", ".join(f"`{op}`" for op in skipped),
        })
        stages[title] = flops.grouped_costs(model, shape, "stage")
    return pd.DataFrame(rows), stages
