"""Model costs: fvcore's counts against known parameter counts, hand formulas and
PyTorch's own FlopCounterMode; the depthwise-separable table; the `dlbook flops`
command; and the costs notebook on tiny settings."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis import cli, flops
from analysis.models import build_model, count_params

MODELS = ("lenet5", "resnet20", "plain20", "resnet20_separable", "squeezenet1_0", "alexnet")
NOTEBOOK = Path(__file__).resolve().parent.parent / "experiments" / "costs.ipynb"


@pytest.fixture(autouse=True)
def one_thread():
    """Static analysis runs tiny forwards; on a shared machine, idle OpenMP threads
    spinning between them cost more CPU than the work itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name, params", [
    ("lenet5", 62_006), ("resnet20", 269_722), ("plain20", 269_722),
    ("squeezenet1_0", 1_248_424), ("alexnet", 61_100_840),
])
def test_known_parameter_counts(name, params):
    model = build_model(name)
    assert count_params(model) == params
    # Per-module rows must add up to the whole model, nothing dropped.
    table = flops.module_costs(model, flops.default_input(name))
    assert table["params"].sum() == params
    assert table["macs"].sum() == flops.totals(model, flops.default_input(name))["macs"]


def test_lenet5_macs_match_hand_formulas():
    table = flops.module_costs(build_model("lenet5"), (3, 32, 32)).set_index("module")
    expected = {
        "features.0": flops.conv_macs(3, 6, 5, 28, 28),  # 32 - 5 + 1 = 28
        "features.4": flops.conv_macs(6, 16, 5, 10, 10),  # 14 - 5 + 1 = 10
        "classifier.1": flops.linear_macs(400, 120),
        "classifier.5": flops.linear_macs(120, 84),
        "classifier.9": flops.linear_macs(84, 10),
    }
    assert expected["features.0"] == 352_800 and expected["features.4"] == 240_000
    for module, macs in expected.items():
        assert table.loc[module, "macs"] == macs, module
    # ReLU, pooling, flatten and dropout cost nothing in fvcore's count.
    assert table["macs"].sum() == sum(expected.values())


def test_resnet20_every_3x3_conv_matches_formula():
    table = flops.module_costs(build_model("resnet20"), (3, 32, 32)).set_index("module")
    layers = flops.conv3x3_layers()
    assert len(layers) == 19  # stem + 3 stages x 3 blocks x 2 convs
    for r in layers.itertuples():
        assert table.loc[r.name, "macs"] == flops.conv_macs(r.cin, r.cout, 3, r.h_out, r.w_out)


@pytest.mark.parametrize("name", MODELS)
def test_totals_agree_with_pytorch_flop_counter(name):
    """FlopCounterMode counts 2 FLOPs per MAC of convolutions and matmuls, nothing else.
    fvcore's conv + linear MACs must match it exactly; fvcore's total additionally
    counts batch norm (2 per element in eval mode) and adaptive average pooling
    (1 per input element). That extra is under 1% of the total, except in the
    separable ResNet, whose convs shrank while its batch norms did not."""
    model, shape = build_model(name), flops.default_input(name)
    total = flops.totals(model, shape)
    by_op = total["macs_by_operator"]
    torch_count = flops.torch_flops(model, shape)
    assert 2 * (by_op.get("conv", 0) + by_op.get("linear", 0)) == torch_count
    extra = total["flops"] - torch_count
    assert extra == 2 * (by_op.get("batch_norm", 0) + by_op.get("adaptive_avg_pool2d", 0))
    assert 0 <= extra < (0.07 if name == "resnet20_separable" else 0.01) * torch_count
    assert total["flops"] == 2 * total["macs"]


def test_separable_ratio_is_exactly_9n_over_9_plus_n():
    table = flops.separable_table()
    assert table["count"].sum() == 19 and len(table) == 6
    for r in table.itertuples():
        n = r.cout
        # standard: H W N C 9; separable: H W C 9 + H W C N  ->  ratio 9N / (9 + N), exactly.
        assert r.macs_standard * (9 + n) == r.macs_separable * 9 * n
        assert r.macs_separable == flops.conv_macs(r.cin, r.cin, 3, r.h_out, r.w_out, r.cin) \
            + flops.conv_macs(r.cin, n, 1, r.h_out, r.w_out)
        assert r.mac_ratio == pytest.approx(flops.separable_ratio(n), rel=1e-12)
        assert r.params_standard == 9 * r.cin * n and r.params_separable == r.cin * (9 + n)
    # The ratio never reaches 9 for finite N: that is the formula's point.
    assert (table["mac_ratio"] < 9).all()


def test_skipped_ops_are_listed():
    model = build_model("resnet20")
    skipped = flops.skipped_ops(model, (3, 32, 32)).set_index("op")
    # Our 'unsupported' rows are exactly the ops fvcore itself reports as unsupported.
    fa = flops._analysis(model, (3, 32, 32))
    fa.total()
    assert dict(fa.unsupported_ops()) == dict(skipped.loc[skipped["why"] == "unsupported", "calls"])
    assert skipped.loc["aten::add", "why"] == "unsupported"
    assert skipped.loc["aten::add", "calls"] == 9  # one residual add per block
    assert skipped.loc["aten::relu", "why"] == "ignored"
    squeeze = flops.skipped_ops(build_model("squeezenet1_0"), (3, 64, 64)).set_index("op")
    assert {"aten::max_pool2d", "aten::cat"} <= set(squeeze.index)


def test_stages_split_at_each_downsampling():
    stages = flops.grouped_costs(build_model("resnet20"), (3, 32, 32), by="stage")
    assert list(stages["resolution"]) == ["32x32", "16x16", "8x8", "1x1"]
    assert stages["params"].sum() == 269_722
    layers = flops.grouped_costs(build_model("squeezenet1_0"), (3, 224, 224), by="layer")
    assert list(layers["layer"]) == ["conv1"] + [f"fire{i}" for i in range(2, 10)] + ["conv10"]
    alex = flops.grouped_costs(build_model("alexnet"), (3, 224, 224), by="layer")
    assert list(alex["layer"]) == [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]


def test_squeezenet_counterfactual_variants():
    # Parameter counts do not depend on the input size here (AlexNet's head pools to 6x6
    # whatever comes in), so a 64x64 input keeps the test fast.
    df = flops.squeezenet_variants((3, 64, 64)).set_index("variant")
    base = df.loc["SqueezeNet 1.0"]
    assert base["params"] == 1_248_424
    # Turning the 1x1 expand filters into 3x3 adds 8 weights per (squeeze, expand1x1) pair.
    fires = [m for m in build_model("squeezenet1_0").features if type(m).__name__ == "Fire"]
    added = sum(8 * f.squeeze.out_channels * f.expand1x1.out_channels for f in fires)
    all3x3 = df.loc["SqueezeNet, 3x3 in place of 1x1 expand filters"]
    assert all3x3["params"] == base["params"] + added
    # Where the pools sit changes the compute, never the parameters.
    early = df.loc["SqueezeNet, early downsampling"]
    assert early["params"] == base["params"] and early["macs"] < base["macs"]
    assert df.loc["SqueezeNet without squeeze layers", "params"] > base["params"]
    assert df.loc["SqueezeNet with AlexNet's fc classifier", "params"] > df.loc["AlexNet", "params"]


def test_module_traffic_of_a_depthwise_conv():
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    t = flops.module_traffic(conv, torch.zeros(1, 16, 8, 8))
    assert t["macs"] == 16 * 8 * 8 * 9
    assert t["bytes"] == 4 * (2 * 16 * 8 * 8 + 16 * 9)
    assert t["intensity"] < 2  # about 9 MACs per 8 bytes: memory-bound


@pytest.mark.parametrize("name", MODELS)
def test_cli_prints_a_table_with_totals(name, capsys):
    assert cli.main(["flops", name]) == 0
    out = capsys.readouterr().out
    assert re.search(r"total: [\d,]+ params, [\d,]+ MACs, [\d,]+ FLOPs", out)
    assert f"total: {count_params(build_model(name)):,} params" in out
    assert "resolution" in out and "ops fvcore counts as zero" in out


def test_cli_by_module_and_input_shape(capsys):
    assert cli.main(["flops", "lenet5", "--by", "module"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "352,800" in out and "62,006 params" in out
    assert cli.main(["flops", "resnet20", "--input", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "input 3x64x64" in out and "64x64" in out
    with pytest.raises(ValueError, match="3x32x32"):
        flops.parse_input("32x32")


def test_costs_notebook_writes_latency(tmp_path):
    """The notebook end to end through papermill, on settings that take seconds."""
    import papermill

    run_dir = tmp_path / "run"
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False,
        parameters={"run_dir": str(run_dir), "batch_sizes": [2], "min_run_time": 0.001,
                    "threads": 1, "device": "cpu", "matmul_size": 64, "copy_mib": 1,
                    "retries": 0})
    latency = pd.read_csv(run_dir / "latency.csv", keep_default_na=False)
    assert set(latency["scope"]) == {"layer", "network"}
    assert set(latency["pass"]) == {"forward", "forward+backward"}
    assert len(latency) == 2 * (6 + 1)  # 6 layer shapes + the network, two passes
    assert (latency["speedup"] > 0).all() and latency["cpu"].notna().all()
    assert (run_dir / "layers.csv").exists() and (run_dir / "hardware.json").exists()
    assert {"standard_spread", "separable_spread", "attempts", "flag"} <= set(latency.columns)
    ceilings = json.loads((run_dir / "ceilings.json").read_text())
    assert set(ceilings) == {"cpu"} and ceilings["cpu"]["matmul_size"] == 64
    assert ceilings["cpu"]["peak_gmacs"] > 0 and ceilings["cpu"]["bandwidth_gbs"] > 0


def _latency_rows(rows):
    """A latency table of made-up times: (shape, pass, standard_s, standard_spread,
    separable_s, separable_spread) per row, one device and batch size."""
    cols = ["shape", "pass", "standard_s", "standard_spread", "separable_s", "separable_spread"]
    df = pd.DataFrame(rows, columns=cols)
    df.insert(0, "scope", "layer")
    df.insert(0, "batch", 4)
    df.insert(0, "device", "cpu")
    return df


def test_latency_problems_on_made_up_numbers():
    df = _latency_rows([
        ("sane", "forward", 1.0, 0.02, 0.5, 0.05),
        ("sane", "forward+backward", 3.0, 0.02, 1.5, 0.05),
        # separable forward+backward below its own forward: both rows are suspect
        ("slower", "forward", 1.0, 0.02, 0.5, 0.02),
        ("slower", "forward+backward", 3.0, 0.02, 0.4, 0.02),
        # the standard form's repeats spread 30% around their median
        ("noisy", "forward", 1.0, 0.30, 0.5, 0.02),
        ("noisy", "forward+backward", 3.0, 0.02, 1.5, 0.02),
        # a spread exactly at the bound passes; equal times pass too
        ("edge", "forward", 1.0, 0.10, 0.5, 0.02),
        ("edge", "forward+backward", 1.0, 0.02, 0.5, 0.02),
    ])
    # The same shape at another batch size is another measurement: not compared.
    other = _latency_rows([("sane", "forward", 9.0, 0.0, 9.0, 0.0),
                           ("sane", "forward+backward", 10.0, 0.0, 10.0, 0.0)]).assign(batch=8)
    df = pd.concat([df, other], ignore_index=True)
    flags = flops.latency_problems(df, max_spread=0.1)
    assert flags.name == "flag" and list(flags.index) == list(df.index)
    assert list(flags) == [
        "", "",
        "separable forward+backward faster than forward",
        "separable forward+backward faster than forward",
        "standard spread 30.0% > 10%", "",
        "", "",
        "", "",
    ]
    # A looser bound lets the noisy row pass; a stricter one catches the edge row too.
    assert flops.latency_problems(df, max_spread=0.5)[4] == ""
    assert flops.latency_problems(df, max_spread=0.05)[6] == "standard spread 10.0% > 5%"
    # Both checks failing on one row: both reasons, in one string.
    both = df.copy()
    both.loc[3, "separable_spread"] = 0.2
    assert flops.latency_problems(both)[3] == ("separable forward+backward faster than forward; "
                                               "separable spread 20.0% > 10%")


def test_attainable_is_the_lower_of_the_two_roofs():
    # peak 100 GMAC/s, 20 GB/s: ridge at 5 MACs per byte
    assert flops.attainable(1.0, 100.0, 20.0) == 20.0  # memory-bound: 20 GB/s x 1 MAC/B
    assert flops.attainable(5.0, 100.0, 20.0) == 100.0  # at the ridge, both roofs meet
    assert flops.attainable(50.0, 100.0, 20.0) == 100.0  # compute-bound
    assert list(flops.attainable([0.5, 2.0, 10.0], 100.0, 20.0)) == [10.0, 40.0, 100.0]


def test_time_module_gives_median_and_spread():
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    t = flops.time_module(conv, torch.zeros(2, 4, 8, 8), backward=True, min_run_time=0.001,
                          repeats=3)
    assert isinstance(t, flops.Timing)
    assert 0 < t.median < 1 and 0 <= t.spread < float("inf")


def test_ceilings_on_tiny_sizes():
    c = flops.ceilings(threads=1, matmul_size=64, copy_mib=1, min_run_time=0.001, repeats=3)
    assert c["matmul_size"] == 64 and c["copy_bytes"] == 2**20 and c["threads"] == 1
    for key in ("peak_gmacs", "bandwidth_gbs", "ridge", "peak_spread", "bandwidth_spread"):
        assert isinstance(c[key], float) and 0 <= c[key] < float("inf"), key
    assert c["peak_gmacs"] > 0 and c["bandwidth_gbs"] > 0
    assert c["ridge"] == pytest.approx(c["peak_gmacs"] / c["bandwidth_gbs"])


def test_latency_table_flags_and_measures_again():
    """Tiny settings; a negative bound flags every row, so each is measured 1 + retries
    times and keeps its flag. The chapter's columns are all there."""
    df = flops.latency_table([2], threads=1, min_run_time=0.001, device="cpu",
                             max_spread=-1.0, retries=1, repeats=3)
    assert len(df) == 2 * (6 + 1)
    assert (df["attempts"] == 2).all() and df["flag"].str.contains("spread").all()
    chapter_columns = {"device", "threads", "batch", "scope", "shape", "count", "pass",
                       "macs_standard", "macs_separable", "mac_ratio", "intensity_standard",
                       "intensity_separable", "standard_s", "standard_spread", "separable_s",
                       "separable_spread", "speedup", "flag"}
    assert chapter_columns <= set(df.columns)
    assert (df["standard_s"] > 0).all() and (df["separable_s"] > 0).all()
    assert df["speedup"].equals(df["standard_s"] / df["separable_s"])


@pytest.mark.parametrize("argv, message", [
    (["flops", "lenet"], "model must be one of"),
    (["flops", "resnet20", "--input", "32x32"], "input shape must look like 3x32x32"),
    (["flops", "alexnet", "--input", "3x32x32"], "alexnet cannot take an input of 3x32x32"),
])
def test_cli_bad_input_is_a_clear_error(argv, message, capsys):
    from analysis import cli

    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_stage_that_only_pools_is_labelled_so():
    from analysis import flops
    from analysis.models import build_model

    stages = flops.grouped_costs(build_model("lenet5"), (3, 32, 32), "stage")
    pools = stages[stages["params"] == 0]
    assert list(pools["resolution"]) == ["14x14", "5x5"]
    assert set(pools["layers"]) == {"(pooling only)"}
