"""Findings of the two cost analyses of Part 1: depthwise separable convolutions (tf-08,
static MACs and measured latency) and SqueezeNet against AlexNet (tf-09, static)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis import results
from analysis.findings import Finding
from analysis.plots import times

CLAIMED = 9  # the statement's speedup
ABOUT = 8  # "about 9x", read generously: at least this, in the most favourable measurement
LATE = 0.5  # "most computation in later stages": more than half of the MACs


@dataclass(frozen=True)
class TF08(Finding):
    """ResNet-20's 3x3 convolutions against their depthwise separable replacements."""

    layers: pd.DataFrame = field(compare=False)  # flops.separable_table: one row per shape
    measured: pd.DataFrame = field(compare=False)  # every latency row, flagged ones included
    overall: pd.DataFrame = field(compare=False)  # per device, pass, batch: all layers' speedup
    best: float  # the most favourable measured speedup (see tf08_verdict)
    verdict: bool | None

    @property
    def sane(self) -> pd.DataFrame:
        """The latency rows that passed the sanity checks: the only ones that are results."""
        return self.measured[self.measured["flag"] == ""]

    @property
    def mac_ratio(self) -> float:
        """MACs of all standard 3x3 convs over those of their replacements."""
        layers = self.layers
        return float((layers["count"] * layers["macs_standard"]).sum()
                     / (layers["count"] * layers["macs_separable"]).sum())

    @property
    def key(self) -> str:
        return (f"MAC ratio {times(self.mac_ratio, 2)} over all {int(self.layers['count'].sum())} "
                f"layers, best measured speedup {times(self.best)}")

    @property
    def headline(self) -> str:
        return f"best {times(self.best)}, MACs {times(self.mac_ratio, 2)}"


def all_layers_speedup(lat: pd.DataFrame, shapes) -> pd.DataFrame:
    """Per device, pass and batch: the time of all the standard 3x3 convs of ResNet-20
    (`count` of each layer shape) over that of their separable replacements; a row only
    where every one of `shapes` has a sane timing (a partial sum answers nothing)."""
    def one(d):
        d = d[d["scope"] == "layer"]
        if set(d["shape"]) != set(shapes):
            return float("nan")
        return (d["count"] * d["standard_s"]).sum() / (d["count"] * d["separable_s"]).sum()

    return (lat.groupby(["device", "pass", "batch"]).apply(one, include_groups=False)
            .rename("speedup").dropna().reset_index())


def tf08_verdict(best: float) -> bool:
    """True if the most favourable measurement (all layers together where every layer shape
    has a sane timing, else the best single layer shape) reaches ABOUT (8x); else False."""
    return bool(best >= ABOUT)


def tf08_from(measured: pd.DataFrame, layers: pd.DataFrame) -> TF08:
    measured = measured.assign(flag=measured["flag"].fillna(""))
    lat = measured[measured["flag"] == ""]
    if not (lat["scope"] == "layer").any():
        raise results.ResultsMissing("every layer timing of depthwise-latency was flagged: "
                                     "measure again on a quieter machine "
                                     "(dlbook run --only tf-08 --force)")
    overall = all_layers_speedup(lat, layers["shape"])
    best = float(overall["speedup"].max() if len(overall)
                 else lat.loc[lat["scope"] == "layer", "speedup"].max())
    return TF08(layers, measured, overall, best, tf08_verdict(best))


def tf_08(results_dir=None) -> TF08:
    from analysis import flops

    measured = results.table("latency", experiment="depthwise-latency", results=results_dir)
    batches = sorted(measured["batch"].unique())
    reference = 32 if 32 in batches else int(max(batches))
    return tf08_from(measured, flops.separable_table(batch=reference))


@dataclass(frozen=True)
class TF09(Finding):
    """SqueezeNet 1.0 against AlexNet, and SqueezeNet with one design choice undone."""

    variants: pd.DataFrame = field(compare=False)  # flops.squeezenet_variants, by variant
    stages: pd.DataFrame = field(compare=False)  # SqueezeNet's MACs per output resolution
    verdict: bool | None

    @property
    def squeezenet(self) -> pd.Series:
        return self.variants.loc["SqueezeNet 1.0"]

    @property
    def alexnet(self) -> pd.Series:
        return self.variants.loc["AlexNet"]

    @property
    def late_share(self) -> float:
        """SqueezeNet's MACs after its second downsampling (27x27 maps and smaller)."""
        late = [r for r in ("27x27", "13x13", "1x1") if r in self.stages.index]
        return float(self.stages.loc[late, "macs"].sum() / self.squeezenet["macs"])

    @property
    def early_params_same(self) -> bool:
        return bool(self.variants.loc["SqueezeNet, early downsampling", "params"]
                    == self.squeezenet["params"])

    @property
    def key(self) -> str:
        sq, alex = self.squeezenet, self.alexnet
        return (f"{times(alex['params'] / sq['params'])} fewer parameters than AlexNet, "
                f"{times(sq['macs'] / alex['macs'], 2)} its MACs; pooling early leaves the "
                f"parameters {'unchanged' if self.early_params_same else 'changed'}")

    @property
    def headline(self) -> str:
        return f"{times(self.alexnet['params'] / self.squeezenet['params'])} fewer parameters"


def tf09_verdict(late_share: float, early_params_same: bool) -> bool:
    """The claim needs both parts: most MACs late (over LATE), and that placement being what
    saves the parameters (moving the pools early changes the count)."""
    return bool(late_share > LATE and not early_params_same)


def tf_09(results_dir=None) -> TF09:
    from analysis import flops, models

    shape = (3, 224, 224)
    costs = flops.module_costs(models.build_model("squeezenet1_0"), shape)
    stages = flops.group_costs(costs, "stage").set_index("resolution")
    variants = flops.squeezenet_variants(shape).set_index("variant")
    found = TF09(variants, stages, None)
    return TF09(variants, stages, tf09_verdict(found.late_share, found.early_params_same))


FINDINGS = {"tf-08": tf_08, "tf-09": tf_09}
